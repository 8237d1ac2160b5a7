"""The agent: one per host. Registers, heartbeats, runs tasks on the local Docker Engine.

Layer: agent. Its actors receive their adapters (bus, runtime) through their constructors,
so the simulation harness runs this same code on a simulated runtime.
"""
