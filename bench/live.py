"""Part 2: from a change on the hypervisor to the websocket message in a connected browser.

daphne runs as a subprocess (the web side); this process runs the monitor in a thread, holding
the test-driver connections as the monitor process does in production. Each round pauses or
resumes a VM through `hypervisor.connect(uri)` and waits for {"topic": "vm.<id>"}.
"""

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.test import Client

import hypervisor
from vms.choices import VMStatus
from vms.models import VirtualMachine
from vms.testhosts import TestHostMonitor

from .stats import summary_ms

MESSAGE_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daphne:
    """`python -m daphne` on a free port, with the bench environment."""

    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "portal.asgi:application",
            ],
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"daphne exited ({self.proc.returncode}): {self.log_path.read_text()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return time.monotonic() - started
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("daphne did not start listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class MonitorThread:
    """The monitor's run loop in a thread; records how long each poll cycle takes."""

    def __init__(self) -> None:
        self.monitor = TestHostMonitor()
        self.cycles: list[float] = []
        self.first_cycle_done = threading.Event()
        cycle = self.monitor.cycle

        def timed_cycle():
            started = time.perf_counter()
            try:
                cycle()
            finally:
                self.cycles.append(time.perf_counter() - started)
                self.first_cycle_done.set()

        self.monitor.cycle = timed_cycle
        self.thread = threading.Thread(target=self.monitor.run, name="bench-monitor", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 120.0) -> None:
        self.monitor.stop.set()
        self.thread.join(timeout)


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def _rounds(port: int, cookie: str, targets: list[tuple[int, str, str]], rounds: int):
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/ws/live/"
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    latencies, misses = [], 0
    async with connect(url, origin=f"http://127.0.0.1:{port}", additional_headers=headers) as ws:
        topics = [f"vm.{pk}" for pk, _uuid, _uri in targets]
        await ws.send(json.dumps({"subscribe": topics}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), MESSAGE_TIMEOUT))
        if sorted(reply.get("subscribed", [])) != sorted(topics):
            raise RuntimeError(f"subscription refused: {reply}")
        paused: set[int] = set()
        for n in range(rounds):
            pk, uuid, uri = targets[(n // 2) % len(targets)]
            # Drop anything still in flight (a poll's late broadcast) before the clock starts.
            while True:
                try:
                    await asyncio.wait_for(ws.recv(), 0.05)
                except TimeoutError:
                    break
            conn = hypervisor.connect(uri)
            t0 = time.perf_counter()
            if pk in paused:
                conn.resume(uuid)
                paused.discard(pk)
            else:
                conn.pause(uuid)
                paused.add(pk)
            deadline = t0 + MESSAGE_TIMEOUT
            got = False
            while (remaining := deadline - time.perf_counter()) > 0:
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), remaining))
                except TimeoutError:
                    break
                if message.get("topic") == f"vm.{pk}":
                    latencies.append(time.perf_counter() - t0)
                    got = True
                    break
            if not got:
                misses += 1
        # Leave every VM running again.
        for pk, uuid, uri in targets:
            if pk in paused:
                hypervisor.connect(uri).resume(uuid)
    return latencies, misses


def measure(user, env: dict[str, str], var_dir: Path, repo: Path, *, rounds: int = 100) -> dict:
    """Start daphne and the monitor, then time `rounds` pause/resume -> websocket message."""
    daphne = Daphne(env, var_dir / "daphne.log", repo)
    mon = MonitorThread()
    result: dict = {"rounds": rounds}
    try:
        started = time.perf_counter()
        mon.monitor.prepare()  # the test hosts' node files, as `manage.py demo_monitor` does
        result["node_files_s"] = time.perf_counter() - started
        started = time.perf_counter()
        mon.start()
        result["daphne_start_s"] = daphne.wait_ready()
        if not mon.first_cycle_done.wait(600):
            raise RuntimeError("the monitor's first poll did not end within 600 s")
        result["first_poll_s"] = time.perf_counter() - started
        # One Up VM on each of 50 different hosts; each is paused then resumed.
        targets = []
        seen_hosts = set()
        for vm in (
            VirtualMachine.objects.filter(status=VMStatus.UP)
            .select_related("host")
            .order_by("pk")
            .iterator()
        ):
            if vm.host_id in seen_hosts:
                continue
            seen_hosts.add(vm.host_id)
            targets.append((vm.pk, str(vm.uuid), vm.host.uri))
            if len(targets) == max(1, rounds // 2):
                break
        latencies, misses = asyncio.run(_rounds(daphne.port, session_cookie(user), targets, rounds))
        result["latency"] = summary_ms(latencies)
        result["misses"] = misses
        result["over_300ms"] = sum(1 for s in latencies if s > 0.3)
        result["latencies"] = latencies
        time.sleep(0.5)  # the resumes at the end settle
    finally:
        mon.stop()
        daphne.stop()
    result["cycles"] = summary_ms(mon.cycles)
    result["cycle_count"] = len(mon.cycles)
    result["poll_seconds"] = mon.monitor.poll_seconds
    return result
