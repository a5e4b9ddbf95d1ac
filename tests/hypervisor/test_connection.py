"""Connection against libvirt's test driver: every method, errors, sharing and events."""

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypervisor_nodes import OFF_UUID, PAUSED_UUID, RUNNING_UUID, SAVED_UUID, GiB

import hypervisor
from hypervisor import (
    DiskSpec,
    DomainInfo,
    DomainNotFound,
    DomainSpec,
    DomainState,
    HostUnreachable,
    HypervisorError,
    LifecycleEvent,
    PoolNotFound,
    VolumeNotFound,
)

NEW_UUID = "00000000-0000-4000-8000-0000000000aa"
MISSING_UUID = "00000000-0000-4000-8000-0000000000ff"


def new_spec(**overrides) -> DomainSpec:
    fields = dict(
        uuid=NEW_UUID,
        name="fresh",
        memory_mb=256,
        vcpus=2,
        disks=(DiskSpec("data", "base.raw", target="vdb", bus="virtio"),),
        description="a <fresh> & tidy VM",
    )
    return DomainSpec(**{**fields, **overrides})


# -- host and connection cache -----------------------------------------------------------------


def test_host_info(conn):
    info = conn.host_info()
    assert info.cpus == 8
    assert info.memory_mb == 16384
    assert info.cpu_model == "Vireo Test CPU"
    assert info.hypervisor.startswith("TEST ")
    assert info.hypervisor == f"TEST {info.hypervisor_version}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", info.libvirt_version)
    assert re.fullmatch(r"\d+\.\d+\.\d+", info.hypervisor_version)
    assert info.cores == 8  # the node's one socket of 8 cores
    assert info.hostname  # the test driver reports the real host name


def test_connect_shares_one_connection_per_uri(node_uri):
    first = hypervisor.connect(node_uri)
    second = hypervisor.connect(node_uri)
    assert first is second
    first.define_domain(new_spec())
    assert second.get_domain(NEW_UUID).name == "fresh"
    assert hypervisor.connect("test:///default") is hypervisor.connect("test:///default")


def test_connect_is_thread_safe(node_uri):
    with ThreadPoolExecutor(8) as pool:
        conns = list(pool.map(lambda _: hypervisor.connect(node_uri), range(16)))
        listings = list(pool.map(lambda c: c.list_domains(), conns))
    assert len({id(c) for c in conns}) == 1
    assert all(len(domains) == 4 for domains in listings)


def test_connect_reopens_a_dead_connection(node_uri):
    old = hypervisor.connect(node_uri)
    old.close()
    assert not old.is_alive()
    with pytest.raises(HostUnreachable):
        old.list_domains()
    new = hypervisor.connect(node_uri)
    assert new is not old and new.is_alive()
    assert len(new.list_domains()) == 4


def test_disconnect_forgets_the_connection(node_uri):
    old = hypervisor.connect(node_uri)
    hypervisor.disconnect(node_uri)
    assert not old.is_alive()
    assert hypervisor.connect(node_uri) is not old
    hypervisor.disconnect_all()
    hypervisor.disconnect("test:///never-opened")  # harmless


def test_forked_child_opens_its_own_connection(conn, node_uri):
    conn.pause(RUNNING_UUID)  # a change only the parent's test-driver state has
    pid = os.fork()
    if pid == 0:  # the child must not use the parent's connection: it opens (and loads) its own
        code = 1
        try:
            child = hypervisor.connect(node_uri)
            fresh = child is not conn and child.get_domain(RUNNING_UUID).state == "running"
            code = 0 if fresh else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert conn.get_domain(RUNNING_UUID).state == DomainState.PAUSED


@pytest.mark.parametrize(
    "uri", ["test:///nonexistent/node.xml", "qemu+tcp://127.0.0.1:1/system", "nosuchdriver:///"]
)
def test_unreachable_uri(uri):
    with pytest.raises(HostUnreachable) as exc:
        hypervisor.connect(uri)
    assert exc.value.message and str(exc.value) == exc.value.message
    assert isinstance(exc.value.code, int)


def test_a_host_that_never_answers_is_unreachable_within_the_timeout(silent_host):
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match=r"did not answer within 0\.5 seconds"):
        hypervisor.connect(silent_host.uri, timeout=0.5)
    assert time.monotonic() - started < 3
    assert len(silent_host.accepted) == 1
    # The attempt given up on still waits: no second one piles up behind it.
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="still not answered an earlier connection"):
        hypervisor.connect(silent_host.uri, timeout=0.5)
    assert time.monotonic() - started < 0.4
    assert len(silent_host.accepted) == 1
    silent_host.close()  # the host hangs up: the waiting attempt ends, a new one may start
    deadline = time.monotonic() + 5
    while True:
        with pytest.raises(HostUnreachable) as exc:
            hypervisor.connect(silent_host.uri, timeout=2)
        if "earlier connection" not in str(exc.value):
            break
        assert time.monotonic() < deadline, "the abandoned attempt never ended"
        time.sleep(0.05)


def test_a_connect_timeout_does_not_slow_a_host_that_answers(node_uri):
    conn = hypervisor.connect(node_uri, timeout=5)
    assert conn.is_alive() and conn.list_domains()


# -- domains -------------------------------------------------------------------------------------


def test_list_domains_reports_node_states(conn):
    domains = {d.uuid: d for d in conn.list_domains()}
    assert domains[RUNNING_UUID] == DomainInfo(
        uuid=RUNNING_UUID,
        name="web",
        state=DomainState.RUNNING,
        has_managed_save=False,
        memory_mb=512,
        vcpus=1,
        persistent=True,
    )
    assert domains[PAUSED_UUID].state == DomainState.PAUSED
    assert domains[SAVED_UUID].state == DomainState.SHUTOFF
    assert domains[SAVED_UUID].has_managed_save
    assert domains[OFF_UUID].state == DomainState.SHUTOFF
    assert not domains[OFF_UUID].has_managed_save


def test_get_domain(conn):
    assert conn.get_domain(PAUSED_UUID).name == "db"


@pytest.mark.parametrize("uuid", [MISSING_UUID, "not-a-uuid"])
def test_unknown_domain_raises_domain_not_found_with_libvirt_text(conn, uuid):
    with pytest.raises(DomainNotFound) as exc:
        conn.get_domain(uuid)
    assert isinstance(exc.value, HypervisorError)
    assert str(exc.value) == exc.value.message
    assert exc.value.message in ("Domain not found", "Invalid UUID")  # libvirt's words
    for action in (conn.start, conn.destroy, conn.undefine_domain):
        with pytest.raises(DomainNotFound):
            action(uuid)


def test_define_domain(conn):
    info = conn.define_domain(new_spec())
    assert info == DomainInfo(
        uuid=NEW_UUID,
        name="fresh",
        state=DomainState.SHUTOFF,
        has_managed_save=False,
        memory_mb=256,
        vcpus=2,
        persistent=True,
    )
    xml = conn._conn.lookupByUUIDString(NEW_UUID).XMLDesc(0)
    assert "<domain type='test'" in xml
    assert "<description>a &lt;fresh&gt; &amp; tidy VM</description>" in xml
    assert re.search(r"<source file='[^']*/data/base.raw'/>", xml)
    assert "<driver name='qemu' type='raw'/>" in xml
    assert "<target dev='vdb' bus='virtio'/>" in xml
    assert "<serial type='pty'>" in xml
    # Its console: VNC on the loopback address, closed (an expired password) until a ticket.
    assert "<graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'" in xml
    assert "passwdValidTo='1970-01-01T00:00:01'" in xml and "<model type='vga'" in xml
    assert "<on_poweroff>destroy</on_poweroff>" in xml
    assert "<on_reboot>restart</on_reboot>" in xml


def test_define_domain_with_missing_storage(conn):
    with pytest.raises(VolumeNotFound):
        conn.define_domain(new_spec(disks=(DiskSpec("data", "nope.qcow2"),)))
    with pytest.raises(PoolNotFound):
        conn.define_domain(new_spec(disks=(DiskSpec("nopool", "base.raw"),)))
    with pytest.raises(DomainNotFound):
        conn.get_domain(NEW_UUID)


def test_lifecycle_operations(conn):
    uuid = conn.define_domain(new_spec()).uuid
    conn.start(uuid)
    assert conn.get_domain(uuid).state == DomainState.RUNNING
    conn.pause(uuid)
    assert conn.get_domain(uuid).state == DomainState.PAUSED
    conn.resume(uuid)
    assert conn.get_domain(uuid).state == DomainState.RUNNING
    conn.reboot(uuid)  # the test driver reboots at once and stays running
    assert conn.get_domain(uuid).state == DomainState.RUNNING
    conn.shutdown(uuid)  # the test driver shuts off at once
    assert conn.get_domain(uuid).state == DomainState.SHUTOFF
    conn.start(uuid)
    conn.managed_save(uuid)
    saved = conn.get_domain(uuid)
    assert (saved.state, saved.has_managed_save) == (DomainState.SHUTOFF, True)
    conn.start(uuid)  # restores the image
    restored = conn.get_domain(uuid)
    assert (restored.state, restored.has_managed_save) == (DomainState.RUNNING, False)
    conn.destroy(uuid)
    assert conn.get_domain(uuid).state == DomainState.SHUTOFF
    conn.undefine_domain(uuid)
    with pytest.raises(DomainNotFound):
        conn.get_domain(uuid)


def test_invalid_transition_is_a_hypervisor_error(conn):
    with pytest.raises(HypervisorError) as exc:
        conn.resume(OFF_UUID)
    assert type(exc.value) is HypervisorError
    assert "not paused" in exc.value.message  # libvirt: "domain 'spare' not paused"


def test_undefine_removes_the_managed_save_image(conn):
    with pytest.raises(HypervisorError, match="managed save image exists"):
        conn.undefine_domain(SAVED_UUID, remove_managed_save=False)
    conn.undefine_domain(SAVED_UUID)
    assert SAVED_UUID not in {d.uuid for d in conn.list_domains()}


def test_wait_for_state(conn):
    info = conn.wait_for_state(PAUSED_UUID, {DomainState.PAUSED}, timeout=1)
    assert info is not None and info.state == DomainState.PAUSED
    assert conn.wait_for_state(PAUSED_UUID, {DomainState.RUNNING}, timeout=0.3, poll=0.05) is None
    threading.Timer(0.2, conn.resume, [PAUSED_UUID]).start()
    info = conn.wait_for_state(PAUSED_UUID, frozenset({DomainState.RUNNING}), timeout=5, poll=0.05)
    assert info is not None and info.state == DomainState.RUNNING


def test_wait_for_state_looks_the_domain_up_once(conn, monkeypatch):
    """Each poll asks the looked-up domain for its state: on a real host one round trip, not a
    lookup and three calls."""
    lookups = []
    real = conn._conn.lookupByUUIDString
    monkeypatch.setattr(conn._conn, "lookupByUUIDString", lambda u: lookups.append(u) or real(u))
    assert conn.wait_for_state(PAUSED_UUID, {DomainState.RUNNING}, timeout=0.3, poll=0.05) is None
    info = conn.wait_for_state(PAUSED_UUID, {DomainState.PAUSED}, timeout=1)
    assert (info.uuid, info.state, info.persistent) == (PAUSED_UUID, DomainState.PAUSED, True)
    assert lookups == [PAUSED_UUID, PAUSED_UUID]  # one per wait, however many polls


# -- storage -------------------------------------------------------------------------------------


def test_pools(conn, tmp_path):
    (pool,) = conn.list_pools()
    assert (pool.name, pool.type, pool.path, pool.active) == (
        "data",
        "dir",
        str(tmp_path / "data"),
        True,
    )
    assert pool.allocation == 3 * GiB  # the sum of its volumes' allocations
    assert pool.available == pool.capacity - pool.allocation
    assert conn.get_pool("data") == pool
    with pytest.raises(PoolNotFound):
        conn.get_pool("nopool")


def test_volumes(conn, tmp_path):
    web = conn.get_volume("data", "web.qcow2")
    assert (web.path, web.capacity, web.allocation, web.format) == (
        str(tmp_path / "data" / "web.qcow2"),
        10 * GiB,
        1 * GiB,
        "qcow2",
    )
    assert web.key == web.path
    assert {v.name for v in conn.list_volumes("data")} == {"web.qcow2", "base.raw"}
    with pytest.raises(VolumeNotFound):
        conn.get_volume("data", "nope")
    with pytest.raises(PoolNotFound):
        conn.list_volumes("nopool")


def test_create_and_delete_volumes(conn):
    before = conn.get_pool("data").allocation
    thin = conn.create_volume("data", "thin.qcow2", 4 * GiB, preallocate=False)
    assert (thin.format, thin.capacity, thin.allocation) == ("qcow2", 4 * GiB, 0)
    thick = conn.create_volume("data", "thick.raw", 1 * GiB, preallocate=True)
    assert (thick.format, thick.capacity, thick.allocation) == ("raw", 1 * GiB, 1 * GiB)
    assert conn.get_pool("data").allocation == before + 1 * GiB
    with pytest.raises(HypervisorError):
        conn.create_volume("data", "thin.qcow2", GiB, preallocate=False)  # exists already
    conn.delete_volume("data", "thin.qcow2")
    conn.delete_volume("data", "thick.raw")
    assert conn.get_pool("data").allocation == before
    with pytest.raises(VolumeNotFound):
        conn.delete_volume("data", "thin.qcow2")
    with pytest.raises(PoolNotFound):
        conn.create_volume("nopool", "x", GiB, preallocate=False)


def test_clone_volume_reports_progress(conn):
    calls = []
    clone = conn.clone_volume(
        "data", "web.qcow2", "web-copy.qcow2", lambda d, t: calls.append((d, t))
    )
    assert (clone.name, clone.format, clone.capacity) == ("web-copy.qcow2", "qcow2", 10 * GiB)
    assert calls[0] == (0, 1 * GiB) and calls[-1] == (1 * GiB, 1 * GiB)
    assert conn.get_volume("data", "web-copy.qcow2") == clone
    assert conn.clone_volume("data", "base.raw", "base-copy.raw").format == "raw"
    with pytest.raises(VolumeNotFound):
        conn.clone_volume("data", "nope", "nope-copy")
    with pytest.raises(HypervisorError):
        conn.clone_volume("data", "base.raw", "web.qcow2")  # target exists


# -- events --------------------------------------------------------------------------------------


def test_lifecycle_events_are_delivered(conn, node_uri):
    seen: list[LifecycleEvent] = []
    got = {word: threading.Event() for word in ("suspended", "resumed", "defined")}

    def broken(event):
        raise RuntimeError("a broken callback must not stop the others")

    def record(event):
        seen.append(event)
        if event.event in got:
            got[event.event].set()

    conn.on_lifecycle(broken)
    conn.on_lifecycle(record)
    conn.pause(RUNNING_UUID)
    assert got["suspended"].wait(5)
    conn.resume(RUNNING_UUID)
    conn.define_domain(new_spec())
    assert got["resumed"].wait(5) and got["defined"].wait(5)
    first = seen[0]
    assert first == LifecycleEvent(node_uri, RUNNING_UUID, "web", "suspended", first.detail)
    assert seen[-1].uuid == NEW_UUID


def test_close_callbacks(conn, node_uri):
    reasons = []
    conn.on_close(lambda reason: 1 / 0)  # logged, never raised
    conn.on_close(reasons.append)
    hypervisor.disconnect(node_uri)
    assert reasons == []  # closing it ourselves is not a loss
    lost = hypervisor.connect(node_uri)
    lost.on_close(reasons.append)
    lost._closed_by_libvirt(lost._conn, 1, None)  # as libvirt does when the socket hits EOF
    assert reasons == ["eof"]
    assert not lost.is_alive()
    assert hypervisor.connect(node_uri) is not lost
