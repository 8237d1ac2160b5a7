"""Tests of knit.domain."""
