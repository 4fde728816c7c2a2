"""What the test suites run against that is not a test: real components and stand-ins.

The Glance harness (a cached virtualenv and a gunicorn process), the faulty upstream, and
the places of the repository the suites read.
"""
