"""Migration policies on real qemu (vms/migration_policy.py): a VM whose cluster says Legacy
with XBZRLE compression and whose own Host tab says 300 ms of downtime migrates between the two
peer libvirtds with those options; a VM with Pass-Through Host CPU runs on KVM with the host's
CPU (or, where nested KVM refuses such a guest, fails to start with qemu's words)."""

import xml.etree.ElementTree as ET

import libvirt
import pytest
from factories import ClusterFactory, HostFactory, VMFactory
from libvirtd import ensure_peer

import hypervisor
from hypervisor import Connection, DomainState
from portal.kernel.models import Event, Job, JobStatus, Phase
from vms.choices import MigrationMode, VMStatus
from vms.migration import migration_options, vm_migrate
from vms.services import vm_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture(scope="module")
def peers():
    uris = [ensure_peer(1), ensure_peer(2)]
    conns = [Connection(uri) for uri in uris]
    yield list(zip(uris, conns, strict=True))
    for conn in conns:
        conn.close()


@pytest.fixture
def pair(peers):
    """A cluster (Legacy, XBZRLE) of the two peers; its VMs' domains go from both afterwards."""
    (uri1, one), (uri2, two) = peers
    cluster = ClusterFactory(migration_policy="legacy", migration_compression="xbzrle")
    first = HostFactory(cluster=cluster, name="policy-peer1", uri=uri1, memory_mb=4096, cpus=2)
    second = HostFactory(cluster=cluster, name="policy-peer2", uri=uri2, memory_mb=4096, cpus=2)
    made = []

    def vm(**fields):
        made.append(VMFactory(host=first, cluster=cluster, memory_mb=256, vcpus=1, **fields))
        return made[-1]

    yield vm, first, second
    for each in made:
        for conn in (one, two):
            for step in (conn.destroy, conn.undefine_domain):
                try:
                    step(str(each.uuid))
                except hypervisor.HypervisorError:
                    pass


def test_the_effective_policy_migrates_a_vm(pair, peers, admin, work):
    make, _first, second = pair
    (_u1, _one), (_u2, two) = peers
    vm = make(name="policy-mover", custom_migration_downtime=300)
    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    options = migration_options(vm, second)
    assert (options.downtime_steps, options.compression) == ((300,), ("xbzrle",))
    work(lambda: vm_migrate(vm_id=vm.pk, user=admin, host_id=second.pk))
    job = Job.objects.filter(kind="vm_migrate", vm=vm).get()
    assert job.status == JobStatus.SUCCEEDED, job.error
    vm.refresh_from_db()
    assert (vm.status, vm.host) == (VMStatus.UP, second)
    assert two.get_domain(str(vm.uuid)).state == DomainState.RUNNING
    done = Event.objects.get(vm=vm, action="migrate", phase=Phase.SUCCEEDED).message
    assert "without compression" not in done  # this libvirt has it


def test_a_pass_through_vm_runs_with_the_hosts_cpu_or_says_why(pair, peers, admin, work):
    """libvirt keeps the domain's host-passthrough CPU; under nested KVM qemu may refuse to
    start such a guest (an MSR the outer hypervisor does not pass on): the Run then fails with
    qemu's words and the VM is left Down, never stuck."""
    make, _first, _second = pair
    (uri1, _one), _ = peers
    vm = make(name="policy-pinned", cpu_passthrough=True, migration_mode=MigrationMode.PINNED)
    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    raw = libvirt.open(uri1)
    try:
        defined = ET.fromstring(raw.lookupByUUIDString(str(vm.uuid)).XMLDesc(0))
    finally:
        raw.close()
    assert defined.find("cpu").get("mode") == "host-passthrough"
    if vm.status != VMStatus.UP:
        job = Job.objects.filter(kind="vm_run", vm=vm).get()
        assert (vm.status, job.status) == (VMStatus.DOWN, JobStatus.FAILED)
        assert "qemu" in job.error
