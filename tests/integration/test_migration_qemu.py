"""Live migration on real qemu between two hosts: two private libvirtds on this machine
(tests/integration/libvirtd.py `ensure_peer`), each with its own host UUID, reaching one
another peer-to-peer over TCP on loopback, as two KVM hosts on a network do. A guest with
no disk (the firmware runs in it) is migrated there and back; one migration is slowed by a
bandwidth limit and cancelled, and the guest runs on where it was."""

import uuid as uuid_lib

import pytest
from libvirtd import ensure_peer

import hypervisor
from hypervisor import Connection, DomainNotFound, DomainSpec, DomainState, MigrationOptions

pytestmark = pytest.mark.integration
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
    options = MigrationOptions(
        auto_converge=True, downtime_steps=(100, 200, 300), migrate_uri="tcp://127.0.0.1"
    )
    result = one.migrate(guest, uri2, options, progress=readings.append, poll=0.05)
    assert two.get_domain(guest).state == DomainState.RUNNING
    with pytest.raises(DomainNotFound):  # undefined on the source
        one.get_domain(guest)
    assert result.duration_s > 0 and any(r.data_total >= 200 * MiB for r in readings)
    downtime = two.migration_downtime(guest)
    assert downtime is None or downtime >= 0

    back = two.migrate(guest, uri1, MigrationOptions(migrate_uri="tcp://127.0.0.1"))
    assert one.get_domain(guest).state == DomainState.RUNNING and back.duration_s > 0


def test_a_cancelled_migration_leaves_the_guest_running_on_its_host(peers, guest):
    (_uri1, one), (uri2, two) = peers
    readings = []
    slow = MigrationOptions(bandwidth_mbps=16, migrate_uri="tcp://127.0.0.1")
    with pytest.raises(hypervisor.MigrationCancelled):
        one.migrate(
            guest, uri2, slow, progress=readings.append, should_abort=lambda: bool(readings)
        )
    assert readings and readings[0].percent < 100
    assert one.get_domain(guest).state == DomainState.RUNNING
    with pytest.raises(DomainNotFound):
        two.get_domain(guest)
