"""A host that stops answering after it was connected (issue 7 item 8): libvirt's keepalive
ends the connection, so a call on it fails instead of waiting for ever, and the monitor's poll
of that host ends with the host Non Responsive while another host goes on being polled.

The real libvirtd is reached through a relay on a unix socket of the test's own; the relay
then stops passing anything on, in either direction, while keeping both sockets open: the
host's port accepts and never answers, as a frozen or partitioned host's does. Nothing is made
on the shared libvirtd: the calls only read."""

import socket
import threading
import time

import pytest
from factories import ClusterFactory, HostFactory
from libvirtd import SOCKET

import hypervisor
import hypervisor.base
from vms.choices import HostStatus
from vms.models import Host
from vms.monitor import Monitor

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# A probe every second, the connection closed after 2 unanswered: about 3 s.
KEEPALIVE = (1, 2)
WITHIN = 15  # seconds a call on the silent host may take to fail (without keepalive: never)


class Relay:
    """A unix socket that relays to the libvirtd socket until `silence()`."""

    def __init__(self, path, target=SOCKET):
        self.path, self.target = str(path), str(target)
        self.silent = threading.Event()
        self.sockets: list[socket.socket] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.path}"

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source, sink):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.silent.is_set():
                continue  # read and dropped: the host has gone quiet, its socket stays open
            try:
                sink.sendall(data)
            except OSError:
                return

    def silence(self):
        self.silent.set()

    def close(self):
        self.server.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def relay(libvirt_uri, tmp_path, monkeypatch):
    monkeypatch.setattr(hypervisor.base, "KEEPALIVE_INTERVAL", KEEPALIVE[0])
    monkeypatch.setattr(hypervisor.base, "KEEPALIVE_COUNT", KEEPALIVE[1])
    hypervisor.start_event_loop()  # keepalive runs on libvirt's event loop
    relay = Relay(tmp_path / "relay.sock")
    yield relay
    relay.close()  # first: a connection still waiting on the relay then sees the end
    hypervisor.disconnect(relay.uri)


def test_a_call_on_a_host_gone_silent_fails_within_the_keepalive(relay):
    conn = hypervisor.connect(relay.uri, timeout=10)
    conn.list_domains()  # answered through the relay
    relay.silence()
    outcome = []

    def call():
        started = time.monotonic()
        try:
            conn.list_domains()
            outcome.append(("answered", time.monotonic() - started))
        except hypervisor.HypervisorError as exc:
            outcome.append((type(exc).__name__, time.monotonic() - started))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(WITHIN)
    assert outcome, f"a call on the silent host still waits after {WITHIN} s"
    ((what, took),) = outcome
    assert what != "answered"
    assert not conn.is_alive()
    print(f"failed with {what} after {took:.1f} s")


def test_a_host_gone_silent_mid_poll_goes_non_responsive_and_stalls_no_other(relay, libvirt_uri):
    cluster = ClusterFactory()
    quiet = HostFactory(cluster=cluster, uri=relay.uri, status=HostStatus.CONNECTING)
    other = HostFactory(cluster=cluster, uri=libvirt_uri, status=HostStatus.CONNECTING)
    monitor = Monitor(poll_seconds=0.5, stale_seconds=30, connect_timeout=10)
    try:
        monitor.cycle(wait=10)
        statuses = dict(Host.objects.values_list("pk", "status"))
        assert statuses == {quiet.pk: HostStatus.UP, other.pk: HostStatus.UP}
        relay.silence()
        other_seen = Host.objects.get(pk=other.pk).last_seen
        deadline = time.monotonic() + WITHIN
        while Host.objects.get(pk=quiet.pk).status == HostStatus.UP:
            assert time.monotonic() < deadline, f"the silent host was still Up after {WITHIN} s"
            monitor.cycle(wait=0.5)
        assert Host.objects.get(pk=quiet.pk).status == HostStatus.NON_RESPONSIVE
        # Meanwhile the other host went on being polled.
        assert Host.objects.get(pk=other.pk).last_seen > other_seen
        assert Host.objects.get(pk=other.pk).status == HostStatus.UP
    finally:
        monitor.stop.set()
        monitor.pool.shutdown(wait=False, cancel_futures=True)
