"""A throwaway PostgreSQL cluster for tests: ``simulations.postgres``, which the simulation
harness uses too (it must not import pytest, so the code lives there)."""

from __future__ import annotations

from simulations.postgres import USER, PostgresCluster, find_postgres_bin, postgres_problem

__all__ = ["USER", "PostgresCluster", "find_postgres_bin", "postgres_problem"]
