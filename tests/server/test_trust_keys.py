"""The cluster's keys are stored encrypted with the server's secret key: a second server of
the database with another key refuses to start, saying why (knit.server.membership)."""

from __future__ import annotations

from pathlib import Path

import pytest

from knit.errors import SecretError
from knit.secrets import SecretBox
from knit.server.membership import load_trust
from knit.server.repo import open_repo

pytestmark = pytest.mark.anyio


async def test_a_server_with_another_secret_key_is_told_to_use_the_same(tmp_path: Path) -> None:
    async with open_repo(str(tmp_path / "knit.db")) as repo:
        key = SecretBox.generate()
        first = await load_trust(repo, key, insecure=False)
        again = await load_trust(repo, key, insecure=False)
        assert again.keys.to_text() == first.keys.to_text()
        with pytest.raises(SecretError, match="every server of a database needs the same"):
            await load_trust(repo, SecretBox.generate(), insecure=False)
