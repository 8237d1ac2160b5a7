"""Tests of the simulation harness (simulations/)."""
