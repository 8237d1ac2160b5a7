"""Fault injection outside pytest: ``python -m simulations.faults``.

Layer: simulations. Runs the scenarios of ``tests/faults/`` (real nats-server, ``knit server``
and ``knit agent`` processes on this machine's Docker Engine) one after the other and prints,
as its last line, one JSON object with the figures each measured. See ``__main__``.
"""
