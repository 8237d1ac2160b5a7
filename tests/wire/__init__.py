"""Tests of knit.wire."""
