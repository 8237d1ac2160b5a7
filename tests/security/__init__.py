"""Attacks on Knit, tried against real processes (and the pure rules that stop them).

One file per theme, named after the part of Knit it attacks: ``test_api_*`` (the REST API
and the dashboard), ``test_agent_*`` (agents), ``test_bus_*`` (joining and NATS).
"""
