"""The server process: ``knit server``.

Layer: server (entry point). Opens the store, the secret box, NATS (embedded unless
``--nats`` is given; an external one may run Knit's operator-mode auth,
``--nats-operator-auth``, docs/nats-cluster.md), loads the API tokens (making the first
admin token if there is none), builds the actor tree of docs/architecture.md, bridges the
bus into it, and serves the HTTP API (over HTTPS with ``--tls-cert``/``--tls-key``). The
HTTP server lives outside the actors' failure domain: a client hanging up never reaches an actor.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import ssl
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
from anyio.abc import TaskGroup, TaskStatus

from knit import __version__
from knit.api.app import create_app
from knit.bus import Bus, BusCredentials, connect_bus
from knit.config import ServerConfig, server_database_url
from knit.domain.leadership import LeaseTiming, fit_to_lead
from knit.domain.mesh import parse_cidr
from knit.errors import KnitError
from knit.mesh import WireGuardInterface
from knit.natsd import EmbeddedNats, parse_listen, wait_for_port
from knit.secrets import SecretBox
from knit.server.access import TokenKeeper
from knit.server.bridge import BridgeStats
from knit.server.claims import ClusterResolver
from knit.server.context import ServerContext
from knit.server.leadership import Elector, Leadership, SoleLeader, Term
from knit.server.logs import LogHub
from knit.server.membership import Membership, NatsTrustHolder, load_trust
from knit.server.mesh import MeshConfig, MeshCoordinator, server_mesh_key
from knit.server.notices import Notices
from knit.server.plane import ServerPlane
from knit.server.repo import Repo, open_repo
from knit.server.tasks import TaskTiming
from knit.server.term import open_term
from knit.server.trust import BusTrust
from knit.store import mesh as mesh_store

log = logging.getLogger(__name__)


GC_THRESHOLDS = (100_000, 10, 100)
"""Collector thresholds of the server process (CPython's default is (700, 10, 10))."""


SWITCH_INTERVAL = 0.0001
"""Seconds a thread may hold the GIL while another waits for it (CPython's default: 0.005)."""


def tune_runtime() -> None:
    """Tune the interpreter for a long-running server with a busy event loop and a large heap.

    - The store's SQLite connections run in threads that take the GIL back for every row
      they bind. While the event loop is busy, each of those waits up to the switch
      interval: with the default 5 ms, a batch of 2,000 upserts took seconds instead of
      10 ms and the writer fell behind (docs/performance.md). 0.1 ms hands the GIL over
      at once; an idle thread costs the loop nothing.
    - With the collector's defaults, a server holding 100,000 instances ran a full
      collection every few seconds while it grew, each one stopping the event loop for up
      to half a second. Objects that exist once the modules are loaded are frozen (never
      scanned again); young collections run after 100,000 net allocations instead of 700,
      so most short-lived objects (messages, rows on their way to the store) are gone
      before one runs. Collecting on a clock instead (every 50 ms, a quarter's growth
      calling for a full one) was tried: shorter young pauses, but four times the
      collector's CPU and full collections of a second (docs/performance.md).
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_server(config: ServerConfig) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    tune_runtime()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(serve_server, config)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

    anyio.run(main, backend="asyncio")
    return 0


def database_url(config: ServerConfig) -> str:
    """The SQLAlchemy URL: ``--database-url``, or ``knit.db`` in the data dir."""
    return server_database_url(config.data_dir, config.database_url)


def prepare_data_dir(path: Path) -> Path:
    """Create the data dir with mode 0700."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


async def serve_server(
    config: ServerConfig, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run one server until cancelled; reports the API's URL through ``task_status``.

    Raises:
        KnitError: the TLS files are unusable, the admin token cannot be written, the
            API's or the nats-server's address cannot be listened on.
    """
    async with anyio.create_task_group() as services:
        try:
            await _serve(config, services, task_status)
        finally:
            services.cancel_scope.cancel()  # the embedded nats-server, last


def check_nats_options(config: ServerConfig) -> None:
    """Refuse NATS options that do not go together, before anything starts.

    Raises:
        KnitError: ``--nats-operator-auth`` without ``--nats``, or with ``--insecure-bus``
            or ``--nats-creds``.
    """
    if not config.nats_operator_auth:
        return
    if config.nats_url is None:
        raise KnitError(
            "--nats-operator-auth is for an external NATS: give its URLs with --nats "
            "(without --nats the server runs its own nats-server, in operator mode already)"
        )
    if config.insecure_bus:
        raise KnitError(
            "--nats-operator-auth and --insecure-bus contradict each other: the first closes "
            "the bus with Knit's credentials, the second opens it"
        )
    if config.nats_creds is not None:
        raise KnitError(
            "--nats-operator-auth connects with the server's own credentials: drop --nats-creds"
        )


def cluster_resolver(config: ServerConfig, trust: BusTrust) -> ClusterResolver | None:
    """What account updates go to with ``--nats-operator-auth`` (None without it)."""
    if not config.nats_operator_auth or config.nats_url is None:
        return None
    return ClusterResolver(
        config.nats_url, trust.system_credentials, trust.keys.system_account.public_key
    )


async def push_accounts(resolver: ClusterResolver, trust: BusTrust) -> None:
    """Push the accounts as the store has them (revocations included) once at start: a
    member started again from an old ``knit nats-config`` learns of every removal since.
    A failure is logged, not fatal: the bus works without it, revocations do not."""
    try:
        await resolver.reload(trust.nats_auth())
    except KnitError as exc:
        log.error("the NATS cluster did not take Knit's accounts: %s", exc)


def embedded_nats(
    config: ServerConfig, trust: BusTrust, data_dir: Path, mesh: MeshCoordinator | None
) -> EmbeddedNats | None:
    """The server's own nats-server (None with ``--nats``: an external one). With a mesh it
    listens on the server's mesh address only (the port of ``--nats-listen``): other hosts
    reach it through the tunnels and nowhere else."""
    if config.nats_url is not None:
        return None
    listen = config.nats_listen
    if mesh is not None:
        listen = f"{mesh.config.address}:{parse_listen(listen, 4222)[1]}"
    return EmbeddedNats(
        listen,
        data_dir,
        None if trust.insecure else trust.nats_auth(),
        log_file=data_dir / "nats-server.log",
    )


async def open_bus(
    config: ServerConfig, trust: BusTrust, embedded: EmbeddedNats | None, services: TaskGroup
) -> Bus:
    """Start ``embedded`` in ``services`` (if any) and connect to NATS.

    Raises:
        KnitError: the nats-server did not start; the credentials file is unusable.
    """
    if embedded is None:
        assert config.nats_url is not None
        credentials = (
            trust.server_credentials()
            if config.nats_operator_auth
            else BusCredentials.from_creds_file(config.nats_creds)
            if config.nats_creds
            else None
        )
        return await connect_bus(config.nats_url, name="knit-server", credentials=credentials)
    url = await services.start(embedded.run)
    credentials = None if trust.insecure else trust.server_credentials()
    return await connect_bus(url, name="knit-server", credentials=credentials)


async def _serve(config: ServerConfig, services: TaskGroup, task_status: TaskStatus[str]) -> None:
    check_nats_options(config)
    tls = tls_files(config.tls_cert, config.tls_key)
    data_dir = prepare_data_dir(config.data_dir)
    restart_grace = (
        config.restart_grace if config.restart_grace is not None else min(config.node_ttl, 10.0)
    )
    if config.insecure_bus:
        log.warning(
            "--insecure-bus: the bus is OPEN. Anyone who reaches NATS can pose as a node, "
            "read its tasks and send tasks to every agent. Use it only in a trusted lab."
        )
    embedded: EmbeddedNats | None = None
    try:
        async with AsyncExitStack() as stack:
            # The store first: a database newer than this Knit stops the start before
            # anything (a secret key, an admin token) is written.
            repo = await stack.enter_async_context(open_repo(database_url(config)))
            secrets = SecretBox.from_data_dir(data_dir)
            access = TokenKeeper(repo.store)
            await access.ensure_admin_token(config.admin_token_path)
            trust = await load_trust(repo, secrets, insecure=config.insecure_bus)
            mesh = await open_mesh(config, repo, secrets, trust)
            if mesh is not None:
                stack.push_async_callback(mesh.interface.down)
                await mesh.up()
            embedded = embedded_nats(config, trust, data_dir, mesh)
            resolver = cluster_resolver(config, trust)
            bus = await open_bus(config, trust, embedded, services)
            stack.push_async_callback(bus.close)  # (before the nats-server stops: below)
            ctx = ServerContext(
                repo=repo,
                bus=bus,
                secrets=secrets,
                trust=trust,
                node_ttl=config.node_ttl,
                restart_grace=restart_grace,
                timing=TaskTiming.from_environ(),
                max_replicas=config.max_replicas,
            )
            ctx.metrics.gc.install()
            stack.callback(ctx.metrics.gc.uninstall)
            shared = repo.store.db.dialect_name != "sqlite"
            leadership = leadership_of(config, repo, bus, shared=shared)
            bridge = BridgeStats()
            logs = LogHub(bus, trust)
            ctx.node_down_listeners.append(logs.node_down)
            plane = ServerPlane(ctx, access, leadership, bridge, logs=logs)
            plane.notices = Notices(
                bus, config.server_id, lambda: plane.term, plane.take_notice, alone=not shared
            )
            holder: NatsTrustHolder | None = embedded or resolver
            plane.membership = Membership(
                repo,
                trust,
                plane.node_changed,
                holder,
                config.nats_advertise or ([embedded.url] if embedded else bus.url.split(",")),
                issue_credentials=holder is not None,
                mesh=mesh,
            )

            notices = plane.notices

            async def lead(
                term: Term, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
            ) -> None:
                # Requests to the leader are taken from before the actors read the store.
                async with (
                    notices.serve_leader(lambda: plane.term),
                    open_term(
                        term,
                        ctx,
                        database_url(config),
                        fenced=shared,
                        history_retention=config.history_retention,
                        bridge_stats=bridge,
                        on_mesh_endpoint=mesh.observe_endpoint if mesh is not None else None,
                    ) as running,
                ):
                    plane.term = running
                    try:
                        task_status.started()
                        await anyio.sleep_forever()
                    finally:
                        plane.term = None

            async with anyio.create_task_group() as tg:
                if resolver is not None:
                    tg.start_soon(push_accounts, resolver, trust)
                if mesh is not None:
                    tg.start_soon(mesh.run, bus)
                await tg.start(logs.run)
                await tg.start(plane.notices.run)
                if not shared:
                    # One server: its actors run before the API answers (as they always did).
                    await tg.start(leadership.run, lead)
                url = await tg.start(serve_http, plane, config.http, tls)
                leadership.api_url = url
                if shared:
                    await tg.start(leadership.run, lead)
                log.info("knit server %s ready: API %s, NATS %s", config.server_id, url, bus.url)
                task_status.started(url)
                await anyio.sleep_forever()
    finally:
        if embedded is not None:
            embedded.release()


def leadership_of(config: ServerConfig, repo: Repo, bus: Bus, *, shared: bool) -> Leadership:
    """Who leads: on a database several servers may share (PostgreSQL), the one holding
    the leader lease (an ``Elector``); on SQLite, this server alone."""
    if not shared:
        return SoleLeader(config.server_id, version=__version__)
    timing = LeaseTiming(config.lease_ttl)

    def fit() -> bool:
        stats = bus.stats
        return fit_to_lead(bus.connected, stats.last_disconnect, time.monotonic(), timing)

    return Elector(
        repo.store.db.lease_engine(), config.server_id, timing, version=__version__, fit=fit
    )


async def open_mesh(
    config: ServerConfig, repo: Repo, secrets: SecretBox, trust: BusTrust
) -> MeshCoordinator | None:
    """The mesh's coordinator with ``--mesh-cidr`` (its interface not up yet), else None."""
    if config.mesh_cidr is None:
        return None
    mesh_config = MeshConfig(
        network=parse_cidr(config.mesh_cidr),
        port=config.mesh_port,
        endpoint=config.mesh_endpoint,
        interface=config.mesh_interface,
    )
    try:
        interface = WireGuardInterface(
            mesh_config.interface,
            await server_mesh_key(repo, secrets),
            f"{mesh_config.address}/{mesh_config.network.prefixlen}",
            mesh_config.port,
        )
    except ValueError as exc:
        raise KnitError(f"--mesh-interface or --mesh-port: {exc}") from None
    records = await repo.store.read(mesh_store.all_members)
    return MeshCoordinator(mesh_config, interface, records, trust, repo)


KEEP_ALIVE_TIMEOUT = 75.0
"""Seconds the API keeps an idle HTTP/1.1 connection open (as nginx does)."""


def check_can_listen(host: str, port: int) -> None:
    """Fail early, with a clear message, when ``host:port`` cannot be listened on.

    Raises:
        KnitError: the address is taken or not ours.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise KnitError(f"cannot listen on {host}:{port} for the API: {exc.strerror}") from exc


def tls_files(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """The certificate and key to serve HTTPS with, checked; None for plain HTTP.

    Raises:
        KnitError: only one of them is given, a file cannot be read, or they do not make
            a certificate and its key.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise KnitError("--tls-cert and --tls-key go together: give both, or neither")
    for what, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise KnitError(f"{what} {path}: cannot read it ({exc.strerror})") from exc
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise KnitError(
            f"--tls-cert {cert} and --tls-key {key} are not a PEM certificate and its key "
            f"({type(exc).__name__})"
        ) from exc
    return cert, key


async def serve_http(
    plane: ServerPlane,
    listen: str,
    tls: tuple[Path, Path] | None = None,
    *,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API with Hypercorn until cancelled; reports the URL once it listens.

    ``tls`` (a certificate and its key, see :func:`tls_files`) serves it over HTTPS.
    Hypercorn runs in a child task and is stopped through its shutdown trigger rather than
    by cancellation, which on Python 3.11 leaves a stale cancellation behind.
    """
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    host, port = parse_listen(listen, 8080)
    check_can_listen(host, port)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 2.0
    # Longer than clients keep idle connections (httpx: 5 s, Hypercorn's own default): with
    # equal timeouts a client could send a request on a connection the server was closing
    # at that moment, and the request failed with a protocol error (seen under load).
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    if tls is not None:
        config.certfile, config.keyfile = str(tls[0]), str(tls[1])
    scheme = "https" if tls is not None else "http"
    app = create_app(plane, logs=plane, registry=plane.metrics_registry)
    shutdown = anyio.Event()
    stopped = anyio.Event()

    async def run() -> None:
        # Shielded: only the shutdown trigger stops Hypercorn (cancelling it mid-serve
        # leaves asyncio errors behind); its graceful timeout bounds the wait.
        with anyio.CancelScope(shield=True):
            try:
                await serve(app, config, shutdown_trigger=shutdown.wait)
            finally:
                stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            await wait_for_port(host, port, timeout=10)
            task_status.started(f"{scheme}://{host}:{port}")
            await anyio.sleep_forever()
        finally:
            app.extensions["knit.dashboard"].close()  # ends open SSE streams first
            shutdown.set()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await stopped.wait()
