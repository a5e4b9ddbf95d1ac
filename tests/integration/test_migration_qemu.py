"""Live migration on real qemu between two hosts: two private libvirtds on this machine
(tests/integration/libvirtd.py `ensure_peer`), each with its own host UUID, reaching one
another peer-to-peer over TCP on loopback, as two KVM hosts on a network do. A guest with
no disk (the firmware runs in it) is migrated there and back; one migration is slowed by a
bandwidth limit and cancelled, and the guest runs on where it was."""

import threading
import time
import uuid as uuid_lib

import pytest
from django.db import connection, transaction
from factories import ClusterFactory, HostFactory, VMFactory
from libvirtd import ensure_peer

import hypervisor
from hypervisor import Connection, DomainNotFound, DomainSpec, DomainState, MigrationOptions
from portal.kernel.config import config_set
from portal.kernel.models import Event, Job, JobStatus, Phase
from portal.kernel.tasks import execute, get_queue
from vms.choices import VMStatus
from vms.migration import vm_migrate, vm_migration_cancel
from vms.services import vm_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def peers():
    uris = [ensure_peer(1), ensure_peer(2)]
    conns = [Connection(uri) for uri in uris]
    yield list(zip(uris, conns, strict=True))
    for conn in conns:
        conn.close()


@pytest.fixture
def guest(peers):
    """A running 256 MB guest on peer 1; destroyed and undefined on both peers afterwards."""
    (_uri1, one), (_uri2, two) = peers
    uuid = str(uuid_lib.uuid4())
    one.define_domain(DomainSpec(uuid=uuid, name=f"vireo-mig-{uuid[:8]}", memory_mb=256, vcpus=1))
    one.start(uuid)
    yield uuid
    for conn in (one, two):
        for step in (conn.destroy, conn.undefine_domain):
            try:
                step(uuid)
            except hypervisor.HypervisorError:
                pass


def test_a_guest_migrates_there_and_back_with_progress(peers, guest):
    (uri1, one), (uri2, two) = peers
    readings = []
    # Capped at 1 MiB/s the idle guest's zero pages still take a second or more: readings
    # every 20 ms see the job under way.
    options = MigrationOptions(
        auto_converge=True,
        downtime_steps=(100, 200, 300),
        bandwidth_mbps=8,
        migrate_uri="tcp://127.0.0.1",
    )
    result = one.migrate(guest, two, options, progress=readings.append, poll=0.02)
    assert two.get_domain(guest).state == DomainState.RUNNING
    with pytest.raises(DomainNotFound):  # undefined on the source
        one.get_domain(guest)
    assert result.duration_s > 0 and any(r.data_total >= 200 * MiB for r in readings)
    downtime = two.migration_downtime(guest)
    assert downtime is None or downtime >= 0

    back = two.migrate(guest, one, MigrationOptions(migrate_uri="tcp://127.0.0.1"))
    assert one.get_domain(guest).state == DomainState.RUNNING and back.duration_s > 0


def test_a_cancelled_migration_leaves_the_guest_running_on_its_host(peers, guest):
    (_uri1, one), (uri2, two) = peers
    # Capped at 1 MiB/s (libvirt's smallest step), even an idle guest's zero pages take a
    # second or more; the abort comes at the first reading of the job, 20 ms in.
    slow = MigrationOptions(bandwidth_mbps=8, migrate_uri="tcp://127.0.0.1")
    with pytest.raises(hypervisor.MigrationCancelled):
        one.migrate(guest, two, slow, should_abort=lambda: True, poll=0.02)
    assert one.get_domain(guest).state == DomainState.RUNNING
    with pytest.raises(DomainNotFound):
        two.get_domain(guest)


# -- through Vireo: the Migrate job on the two peers ----------------------------------------


@pytest.fixture
def vireo_pair(peers, django_db_blocker):
    """A cluster whose two Up hosts are the peers, and a Down 256 MB VM with no disk on the
    first; its domain is taken off both peers afterwards."""
    (uri1, one), (uri2, two) = peers
    cluster = ClusterFactory()
    first = HostFactory(cluster=cluster, name="peer1", uri=uri1, memory_mb=4096, cpus=2)
    second = HostFactory(cluster=cluster, name="peer2", uri=uri2, memory_mb=4096, cpus=2)
    vm = VMFactory(host=first, cluster=cluster, name="mover", memory_mb=256, vcpus=1)
    yield vm, first, second
    for conn in (one, two):
        for step in (conn.destroy, conn.undefine_domain):
            try:
                step(str(vm.uuid))
            except hypervisor.HypervisorError:
                pass


def test_vireo_migrates_a_running_vm_and_its_row_follows(vireo_pair, peers, admin, work):
    vm, first, second = vireo_pair
    (_u1, one), (_u2, two) = peers
    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP, Job.objects.order_by("-pk").first().error
    work(lambda: vm_migrate(vm_id=vm.pk, user=admin))  # Select Host Automatically: peer2
    vm.refresh_from_db()
    job = Job.objects.filter(kind="vm_migrate").get()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (vm.status, vm.host, vm.migrating_to) == (VMStatus.UP, second, None)
    assert two.get_domain(str(vm.uuid)).state == DomainState.RUNNING
    with pytest.raises(DomainNotFound):
        one.get_domain(str(vm.uuid))
    done = Event.objects.filter(vm=vm, action="migrate", phase=Phase.SUCCEEDED).get().message
    assert done.startswith("VM mover was migrated from host peer1 to peer2 in ")


@pytest.mark.django_db(transaction=True)
def test_cancel_migration_of_a_slow_migration(vireo_pair, peers, admin, work, settings):
    """Capped at 8 Mbps (1 MiB/s) the migration takes seconds: Cancel Migration as soon as
    the job runs (it reads libvirt's job every 20 ms here), and the guest runs on on peer1."""
    vm, first, _second = vireo_pair
    (_u1, one), _ = peers
    config_set("MigrationBandwidth", "custom")
    config_set("MigrationBandwidthCustomMbps", 8)
    settings.VIREO_MIGRATION_POLL_SECONDS = 0.02
    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    with transaction.atomic():
        job = vm_migrate(vm_id=vm.pk, user=admin)
    get_queue().empty()  # the job frame runs here, on a thread, as a worker would run it
    worker = threading.Thread(target=lambda: (execute(job.pk), connection.close()))
    worker.start()
    deadline = time.monotonic() + 60
    while Job.objects.get(pk=job.pk).status == JobStatus.QUEUED and time.monotonic() < deadline:
        time.sleep(0.02)
    vm_migration_cancel(vm_id=vm.pk, user=admin)
    worker.join(60)
    vm.refresh_from_db()
    assert (vm.status, vm.host, vm.migrating_to) == (VMStatus.UP, first, None)
    assert one.get_domain(str(vm.uuid)).state == DomainState.RUNNING
    assert Event.objects.filter(message__contains="was cancelled; it runs on host peer1").exists()
