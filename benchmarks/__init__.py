"""The performance suite (issue 8): run by hand with `make bench` or `python -m benchmarks`.

Not part of the unit tests: it measures, it asserts nothing (pytest collects none of it).
"""
