"""A running guest keeps running through a live migration made by Vireo (issue 11).

The guest of tests/integration/guest_image.py (busybox and qemu-ga, TCG) boots on peer 1 of
tests/integration/libvirtd.py `ensure_peer`, its disk in a directory both peers see at the same
path and attached read-only (libvirt 9.0 refuses to migrate a writable disk on a local file
system; the guest runs from its initramfs), as bench/migration.py `downtime()` boots it. Through
the agent's guest-exec a loop writes an increasing counter to /tmp/counter every 0.2 s. Vireo's
Migrate job takes it to peer 2 while the production monitor polls both hosts: the counter and
/proc/uptime go on (no restart), the VM's row moved (same row, Up on peer 2), and the monitor
never saw it go Down or Unknown, nor removed or adopted it as an external VM.
"""

import base64
import json
import os
import shutil
import threading
import time
import uuid as uuid_lib

import pytest
from django.db import connection
from django.utils import timezone
from factories import ClusterFactory, HostFactory, VMFactory
from guest_image import agent_guest_image
from libvirtd import ensure_peer, make_pool, remove_pool

import hypervisor
from hypervisor import Connection, DiskSpec, DomainNotFound, DomainSpec, DomainState
from portal.kernel.models import Event, Job, JobStatus, Phase
from vms.choices import HostStatus, VMStatus
from vms.migration import vm_migrate
from vms.models import Host, VirtualMachine
from vms.monitor import Monitor

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

COUNTER_LOOP = (
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new "
    "/tmp/counter; sleep 0.2 2>/dev/null || usleep 200000; done"
)


def _agent(dom, command: str, arguments: dict | None = None, timeout: int = 5) -> dict:
    import libvirt_qemu

    message = {"execute": command, **({"arguments": arguments} if arguments else {})}
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(message), timeout, 0))


def _exec(dom, script: str, *, wait: bool = True) -> str:
    """Run `script` with the guest's sh through guest-exec; its output (unless not `wait`)."""
    encoded = base64.b64encode(script.encode()).decode()
    started = _agent(
        dom,
        "guest-exec",
        {
            "path": "/bin/sh",
            "arg": ["-c", f"echo {encoded} | base64 -d | sh"],
            "capture-output": wait,
        },
    )
    if not wait:
        return ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = _agent(dom, "guest-exec-status", {"pid": started["return"]["pid"]})["return"]
        if status["exited"]:
            assert status.get("exitcode") == 0, status
            return base64.b64decode(status.get("out-data", "")).decode()
        time.sleep(0.1)
    raise AssertionError(f"{script!r} did not end in the guest within 20 s")


def _reading(raw, uuid: str) -> tuple[int, float]:
    """(counter, uptime in seconds) read in the guest, wherever it runs now."""
    output = _exec(raw.lookupByUUIDString(uuid), "cat /tmp/counter /proc/uptime")
    counter, uptime = output.splitlines()
    return int(counter), float(uptime.split()[0])


@pytest.fixture
def counting_guest(tmp_path):
    """The agent guest running the counter loop on peer 1: (uuid, domain name, the two
    uris, raw libvirt connections to them). Taken off both peers afterwards, pass or fail."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the two private libvirtds and their qemu run as root")
    import libvirt

    uris = [ensure_peer(1), ensure_peer(2)]
    image = agent_guest_image()
    uuid = str(uuid_lib.uuid4())
    name = f"vireo-ctr-{uuid[:8]}"
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copyfile(image, shared / "guest.raw")
    one = Connection(uris[0])
    one._kvm_usable = lambda: False  # this machine's nested KVM cannot boot the guest kernel
    raw = [libvirt.open(uri) for uri in uris]
    try:
        for uri in uris:  # the same directory at the same path on both hosts
            make_pool(uri, name, shared)
        one.define_domain(
            DomainSpec(
                uuid=uuid,
                name=name,
                memory_mb=256,
                vcpus=1,
                disks=(DiskSpec(pool=name, volume="guest.raw"),),
            )
        )
        dom = raw[0].lookupByUUIDString(uuid)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        raw[0].defineXML(xml.replace("</disk>", "<readonly/></disk>", 1))
        one.start(uuid)
        dom = raw[0].lookupByUUIDString(uuid)
        deadline = time.monotonic() + 120
        while True:
            try:
                _agent(dom, "guest-ping", timeout=2)
                break
            except libvirt.libvirtError:
                assert time.monotonic() < deadline, "the guest's qemu-ga did not answer in 120 s"
                time.sleep(1)
        _exec(dom, COUNTER_LOOP, wait=False)
        yield uuid, name, uris, raw
    finally:
        for uri in uris:
            conn = Connection(uri)
            for step in (conn.destroy, conn.undefine_domain):
                try:
                    step(uuid)
                except hypervisor.HypervisorError:
                    pass
            conn.close()
            remove_pool(uri, name)
        one.close()
        for conn in raw:
            conn.close()


@pytest.fixture
def inventory(counting_guest):
    """The two peers as Up hosts of a cluster, and the guest as VM "counter" Up on peer1."""
    uuid, _name, (uri1, uri2), _raw = counting_guest
    cluster = ClusterFactory()
    common = {"cluster": cluster, "status": HostStatus.UP, "memory_mb": 4096, "cpus": 2}
    first = HostFactory(name="peer1", uri=uri1, **common)
    second = HostFactory(name="peer2", uri=uri2, **common)
    vm = VMFactory(
        uuid=uuid,
        name="counter",
        host=first,
        cluster=cluster,
        status=VMStatus.UP,
        memory_mb=256,
        vcpus=1,
    )
    return vm, first, second


@pytest.fixture
def monitor(inventory):
    """The production monitor in a thread, polling every second, for the whole test."""
    mon = Monitor(poll_seconds=1.0, stale_seconds=300)

    def run():
        try:
            mon.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="vireo-monitor", daemon=True)
    thread.start()
    yield mon
    mon.stop.set()
    thread.join(timeout=15)
    mon.pool.shutdown(wait=True)
    hypervisor.disconnect_all()


def test_a_counting_guest_runs_on_through_vireos_live_migration(
    counting_guest, inventory, monitor, admin, work
):
    uuid, name, (uri1, uri2), (raw1, raw2) = counting_guest
    vm, first, second = inventory

    # Not yet started counting, or TCG slow: wait for a few ticks (and the monitor's polls).
    deadline, why = time.monotonic() + 20, None
    while True:
        try:
            before = _reading(raw1, uuid)
            if before[0] >= 5:
                break
            why = before
        except (AssertionError, ValueError) as exc:
            why = exc  # /tmp/counter not written yet
        assert time.monotonic() < deadline, f"the guest's counter loop did not start: {why}"
        time.sleep(0.5)
    while Host.objects.filter(pk__in=(first.pk, second.pk), last_seen__isnull=False).count() < 2:
        assert time.monotonic() < deadline, "the monitor did not poll the two hosts"
        time.sleep(0.2)
    before = _reading(raw1, uuid)

    work(lambda: vm_migrate(vm_id=vm.pk, user=admin, host_id=second.pk))
    at_end = _reading(raw2, uuid)
    ended = timezone.now()
    job = Job.objects.get(kind="vm_migrate", vm=vm)
    assert job.status == JobStatus.SUCCEEDED, job.error

    time.sleep(3)  # counting on, and the monitor's polls of both hosts after the move
    after = _reading(raw2, uuid)
    polled = Host.objects.filter(pk__in=(first.pk, second.pk), last_seen__gt=ended).count()
    assert polled == 2, "the monitor did not poll both hosts after the migration"
    assert before[0] < at_end[0] < after[0], (before, at_end, after)
    assert before[1] < at_end[1] < after[1], (before, at_end, after)  # uptime: no reboot

    # The domain moved: running on peer 2, gone from peer 1.
    two = Connection(uri2)
    one = Connection(uri1)
    try:
        assert two.get_domain(uuid).state == DomainState.RUNNING
        with pytest.raises(DomainNotFound):
            one.get_domain(uuid)
    finally:
        one.close()
        two.close()

    # The same row moved with it; no row was added for it (no external-<name> adoption).
    vm.refresh_from_db()
    assert (vm.status, vm.host, vm.migrating_to) == (VMStatus.UP, second, None)
    assert VirtualMachine.objects.filter(uuid=uuid).count() == 1
    assert not VirtualMachine.objects.filter(name__startswith=f"external-{name}").exists()

    # The monitor never saw it vanish or appear: no Down/Unknown status, no removal or adoption.
    statuses = Event.objects.filter(vm=vm, action="status").values_list("message", flat=True)
    assert not [m for m in statuses if " is now Down " in m or " is now Unknown " in m]
    assert not Event.objects.filter(vm=vm, action__in=("adopt", "ha_restart")).exists()
    assert not Event.objects.filter(action="adopt", message__contains=name).exists()
    done = Event.objects.filter(vm=vm, action="migrate", phase=Phase.SUCCEEDED).get().message
    assert done.startswith("VM counter was migrated from host peer1 to peer2 in ")
