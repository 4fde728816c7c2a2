"""The wiring: the app factories, app state, the command line, workers and reload."""
