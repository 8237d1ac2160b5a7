"""A simulated host's addresses: its networks' subnets and the host ports containers publish.

Layer: simulations. Imports the standard library, ``knit.errors`` and ``knit.runtime.base``.

As Docker does: ``Networks.ensure`` is idempotent; another subnet for an existing name, or a
subnet overlapping another network's, is ``RuntimeFailure("network")``; without a subnet one
is taken from Docker's default pools (172.18-31.0.0/16, then 192.168.x.0/20). ``publish``
refuses a host port a running container holds and picks a free one, from 32768, when the
binding names none.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from knit.errors import RuntimeFailure
from knit.runtime.base import PortBinding, PublishedPort

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DEFAULT_POOLS: tuple[IPNetwork, ...] = (
    *(ipaddress.ip_network(f"172.{n}.0.0/16") for n in range(18, 32)),
    *(ipaddress.ip_network(f"192.168.{n}.0/20") for n in range(0, 256, 16)),
)
_FIRST_EPHEMERAL_PORT = 32768


@dataclass(frozen=True)
class _Network:
    id: str
    subnet: IPNetwork
    labels: dict[str, str]


class Networks:
    """One simulated host's networks, by name."""

    __slots__ = ("_by_name",)

    def __init__(self) -> None:
        self._by_name: dict[str, _Network] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def ensure(
        self,
        name: str,
        subnet: str | None,
        labels: Mapping[str, str] | None,
        new_id: Callable[[str], str],
    ) -> str:
        """Create the network ``name`` unless it exists; return its id.

        Args:
            new_id: makes the id of a new network (given ``"network"``).

        Raises:
            RuntimeFailure: "network": a bad, different or overlapping subnet, or the default
                pools are used up.
        """
        try:
            wanted = None if subnet is None else ipaddress.ip_network(subnet, strict=False)
        except ValueError as exc:
            raise RuntimeFailure("network", f"bad subnet {subnet!r}: {exc}") from exc
        found = self._by_name.get(name)
        if found is not None:
            if wanted is not None and wanted != found.subnet:
                raise RuntimeFailure("network", f"{name} exists with subnet {found.subnet}")
            return found.id
        taken = [n.subnet for n in self._by_name.values()]
        if wanted is None:
            wanted = next((p for p in _DEFAULT_POOLS if not _overlaps(p, taken)), None)
            if wanted is None:
                raise RuntimeFailure("network", f"{name}: no free address pool is left")
        elif _overlaps(wanted, taken):
            raise RuntimeFailure("network", f"{name}: {wanted} overlaps another network's pool")
        self._by_name[name] = _Network(new_id("network"), wanted, dict(labels or {}))
        return self._by_name[name].id

    def remove(self, name: str) -> None:
        """Forget the network ``name``; a missing one is not an error."""
        self._by_name.pop(name, None)


def publish(
    container: str, bindings: Iterable[PortBinding], taken: list[PublishedPort]
) -> list[PublishedPort]:
    """The ports a start of ``container`` (its name) publishes for ``bindings``.

    Args:
        taken: the ports the host's containers publish; those published here are added.

    Raises:
        RuntimeFailure: "start": a host port is taken.
    """
    published: list[PublishedPort] = []
    for binding in bindings:
        address, port = binding.host_ip or "0.0.0.0", binding.host_port
        if port is None:
            used = {p.host_port for p in taken if p.protocol == binding.protocol}
            port = next(n for n in itertools.count(_FIRST_EPHEMERAL_PORT) if n not in used)
        elif any(_clash(p, address, port, binding.protocol) for p in taken):
            why = f"Bind for {address}:{port} failed: port is already allocated"
            raise RuntimeFailure("start", f"{container}: {why}")
        published.append(PublishedPort(binding.container_port, binding.protocol, address, port))
        taken.append(published[-1])
    return published


def _clash(held: PublishedPort, address: str, port: int, protocol: str) -> bool:
    same_address = held.host_ip == address or "0.0.0.0" in (held.host_ip, address)
    return held.host_port == port and held.protocol == protocol and same_address


def _overlaps(subnet: IPNetwork, others: list[IPNetwork]) -> bool:
    return any(subnet.version == other.version and subnet.overlaps(other) for other in others)


__all__ = ["Networks", "publish"]
