"""Trust: the keys, credentials and message authentication that make the bus safe.

Layer: trust (pure: ``cryptography`` and the standard library; ``knit.wire.subjects`` for the
subjects a node may use). No I/O: the server and the agent keep the keys (in the store,
in the agent's data dir) and apply what this package computes.

- :mod:`knit.trust.nkeys`: NATS nkeys (Ed25519) and their text encoding.
- :mod:`knit.trust.natsjwt`: the operator, account and user JWTs of NATS's decentralized
  authentication, and the permissions of a node.
- :mod:`knit.trust.macs`: the keys a node shares with the server, and the MACs and
  signatures that prove where a message comes from.
- :mod:`knit.trust.keys`: the server's long-lived keys.
"""
