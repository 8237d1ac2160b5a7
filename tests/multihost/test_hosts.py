"""The multi-host harness itself: hosts with their own Engines and addresses, reaching each other
on the LAN (hosts, containers, published ports, Knit's processes), and nothing left afterwards.

Traffic goes only to addresses of the namespaces and containers the tests made; every wait is
bounded.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from tests.support.docker import BUSYBOX_IMAGE, DockerCLIError, docker
from tests.support.hosts import (
    Host,
    HostCommandError,
    Lan,
    open_lan,
    sweep_abandoned_lans,
    traces_of,
)
from tests.support.knit_api import KnitApi
from tests.support.knit_docker import container_ids
from tests.support.knit_processes import REPO_ROOT, KnitAgent, KnitServer, ProcessWatch
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def fetch(host: Host, url: str) -> str:
    """``GET url`` with busybox wget from ``host``'s namespace (no container); the body."""
    return host.run(["busybox", "wget", "-q", "-O", "-", url], timeout=10).stdout


def docker_logs(host: Host, container: str) -> str:
    """The container's stdout and stderr."""
    done = subprocess.run(
        ["docker", "logs", container],
        capture_output=True,
        text=True,
        timeout=20,
        env=dict(os.environ, DOCKER_HOST=host.docker_host),
    )
    return done.stdout + done.stderr


def test_each_host_has_an_engine_of_its_own_holding_the_busybox_image(
    lan: Lan, docker_host: str
) -> None:
    roots = [host.docker("info", "--format", "{{.DockerRootDir}}").strip() for host in lan.hosts]
    assert roots == [str(host.root / "data") for host in lan.hosts]
    machine = docker("info", "--format", "{{.DockerRootDir}}", docker_host=docker_host).strip()
    assert machine not in roots
    image_ids = [
        host.docker("image", "inspect", "--format", "{{.Id}}", BUSYBOX_IMAGE) for host in lan.hosts
    ]
    assert len(set(image_ids)) == 1, f"the image was not copied as it is: {image_ids}"
    assert [h.address for h in lan.hosts] == [str(lan.subnet[n]) for n in (11, 12, 13)]


def test_hosts_ping_each_other_and_the_test_process(lan: Lan) -> None:
    for host in lan.hosts:
        for target in [*(h.address for h in lan.hosts if h is not host), lan.gateway]:
            done = host.run(["busybox", "ping", "-c", "1", "-W", "2", target], timeout=10)
            assert "1 packets received" in done.stdout, done.stdout


def test_hosts_reach_a_server_of_the_test_process_at_the_gateway(lan: Lan) -> None:
    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = self.client_address[0].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((lan.gateway, 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://{lan.gateway}:{server.server_address[1]}/"
        assert [fetch(host, url) for host in lan.hosts] == [h.address for h in lan.hosts]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_hosts_have_no_route_off_the_lan(lan: Lan) -> None:
    # ``ip route get`` sends nothing: it asks the host's routing table.
    with pytest.raises(HostCommandError, match="unreachable"):
        lan.hosts[0].run(["ip", "route", "get", "198.51.100.1"])
    assert "eth0" in lan.hosts[0].run(["ip", "route", "get", lan.hosts[1].address]).stdout


def test_a_published_port_is_reached_from_another_hosts_container_and_namespace(
    lan: Lan,
) -> None:
    host1, host2, host3 = lan.hosts
    page = "hello from host2\n"
    serve = (
        f"mkdir /www && echo '{page.strip()}' > /www/index.html && exec httpd -f -v -p 8080 -h /www"
    )
    server = host2.docker(
        "run", "--detach", "--publish", "8080:8080", BUSYBOX_IMAGE, "sh", "-c", serve
    ).strip()  # fmt: skip
    url = f"http://{host2.address}:8080/"
    try:

        def served() -> str | None:
            with contextlib.suppress(HostCommandError):
                return fetch(host1, url)
            return None

        assert wait_until(served, timeout=10, what=f"{url} from host1", interval=0.1) == page
        command = ["timeout", "8", "wget", "-q", "-O", "-", url]
        assert host3.docker("run", "--rm", BUSYBOX_IMAGE, *command) == page
        # Masqueraded by host3's dockerd: host2 sees (and answers) host3's address.
        logs = docker_logs(host2, server)
        assert host1.address in logs and host3.address in logs, logs
    finally:
        host2.docker("rm", "--force", server)


def test_knit_server_and_agents_run_on_hosts(lan: Lan, tmp_path: Path) -> None:
    host1, *agent_hosts = lan.hosts
    server = KnitServer(tmp_path, host1.docker_host, address=host1.address, netns=host1.netns)
    watch = ProcessWatch([server])
    api = KnitApi(server.api_url, watch, token_file=server.token_file)
    try:
        server.start_and_wait()
        assert server.api_url.startswith(f"http://{host1.address}:")
        for host in agent_hosts:
            token = api.ok(api.post("/join-tokens", {"uses": 1}), 201)["token"]
            agent = KnitAgent(
                tmp_path,
                host.docker_host,
                name=f"agent-{host.name}",
                server_url=server.api_url,
                join_token=token,
                labels={"host": host.name},
                extra_args=["--hostname", host.name],
                netns=host.netns,
            )
            watch.processes.append(agent)
            agent.start()
        nodes = api.wait_healthy_nodes(2)
        assert {n["hostname"] for n in nodes} == {"host2", "host3"}

        for host in agent_hosts:
            body = {
                "name": f"on-{host.name}",
                "image": BUSYBOX_IMAGE,
                "replicas": 1,
                "command": SLEEPER,
                "node_selector": {"host": host.name},
            }
            deployment = api.ok(api.post("/deployments", body), 201)["id"]
            api.wait_instances(deployment, "running")
            labels = {"knit.deployment": deployment}
            ran = {h.name: container_ids(h.docker_host, labels) for h in lan.hosts}
            assert {name: len(ids) for name, ids in ran.items() if ids} == {host.name: 1}
    finally:
        api.close()
        for process in reversed(watch.processes):
            process.stop()
        for host in lan.hosts:
            with contextlib.suppress(DockerCLIError):
                host.engine.remove_containers()


def test_closing_a_lan_leaves_nothing_even_when_the_block_fails(image_source: str) -> None:
    failing = pytest.raises(RuntimeError, match="the test failed")
    with failing, open_lan(1, source=image_source) as lan:
        (host,) = lan.hosts
        container = host.docker("run", "--detach", BUSYBOX_IMAGE, *SLEEPER).strip()
        pid = int(host.docker("inspect", "--format", "{{.State.Pid}}", container))
        sleeper = host.popen(["sleep", "300"])
        assert lan.traces(), "a started LAN shows"
        raise RuntimeError("the test failed")
    assert lan.traces() == []
    assert sleeper.poll() is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_set_up_failing_halfway_leaves_nothing(image_source: str) -> None:
    lan = Lan()
    try:
        lan.open()
        # The Engines start, but none can answer within a millisecond.
        with pytest.raises(AssertionError, match="dockerd in knh1-"):
            lan.add_hosts(2, source=image_source, timeout=0.001)
        assert any(t.startswith("process") for t in lan.traces()), lan.traces()
    finally:
        lan.close()
    assert lan.traces() == []


def test_a_lan_whose_test_process_was_killed_is_swept(image_source: str) -> None:
    program = (
        "import time\n"
        "from tests.support.hosts import open_lan\n"
        f"with open_lan(1, source={image_source!r}) as lan:\n"
        f"    lan.hosts[0].docker('run', '--detach', {BUSYBOX_IMAGE!r}, *{SLEEPER!r})\n"
        "    print(lan.tag, flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        assert child.stdout is not None
        tag = child.stdout.readline().strip()
        assert tag, "the child made no LAN"
    finally:
        child.kill()  # the child alone: its Engine gets SIGTERM through its parent-death signal
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert traces_of(tag), "a killed test process leaves its LAN behind"
    assert tag in sweep_abandoned_lans()
    assert traces_of(tag) == []
