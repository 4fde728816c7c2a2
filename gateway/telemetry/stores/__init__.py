"""Where the migration report is kept beyond one process: the grammar of ``[report] store``,
an embedded SQLite file for the workers of one machine, Redis for a fleet."""
