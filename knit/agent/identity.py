"""The agent's identity: a node id generated once and kept in the data dir.

Layer: agent. Imports the standard library only.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

NODE_ID_FILE = "node-id"
_VALID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def ensure_data_dir(data_dir: Path) -> Path:
    """Create the agent's data dir (mode 0700) if needed; return it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    return data_dir


def load_or_create_node_id(data_dir: Path) -> str:
    """Return the node id stored in ``data_dir``, generating and storing one the first time.

    The id is a NATS subject token (``knit.tasks.{id}``), so it is kept to ``[a-z0-9-]``.

    Raises:
        ValueError: the stored id is not a valid node id (the file was edited by hand).
    """
    path = ensure_data_dir(data_dir) / NODE_ID_FILE
    if path.exists():
        node_id = path.read_text().strip()
        if not _VALID.match(node_id):
            raise ValueError(f"{path} holds an invalid node id {node_id!r}")
        return node_id
    node_id = uuid.uuid4().hex
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node_id + "\n")
    os.replace(tmp, path)
    return node_id
