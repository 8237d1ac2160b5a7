"""Knit's tests; a package so that ``tests.support`` can be imported by conftest and tests."""
