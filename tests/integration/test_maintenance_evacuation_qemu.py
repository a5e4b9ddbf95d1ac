"""Maintenance of a host running VMs, on real qemu between the two peer libvirtds
(tests/integration/libvirtd.py `ensure_peer`): the host is Preparing For Maintenance, the
evacuation (vms/evacuation.py, which the monitor runs once a cycle; called directly here)
migrates both its running guests live to the other peer, and the host reaches Maintenance."""

import uuid as uuid_lib

import pytest
from factories import ClusterFactory, HostFactory, VMFactory
from libvirtd import ensure_peer

import hypervisor
from hypervisor import Connection, DomainNotFound, DomainState
from portal.kernel.models import Job, JobStatus
from vms import inventory
from vms.choices import HostStatus, VMPriority, VMStatus
from vms.evacuation import evacuations_run
from vms.models import Host
from vms.services import vm_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def two_on_peer1():
    """Two Down 256 MB VMs with no disk on peer1 of a cluster of the two peers; their domains
    are taken off both peers afterwards."""
    uris = [ensure_peer(1), ensure_peer(2)]
    conns = [Connection(uri) for uri in uris]
    cluster = ClusterFactory()
    first = HostFactory(cluster=cluster, name="peer1", uri=uris[0], memory_mb=4096, cpus=2)
    second = HostFactory(cluster=cluster, name="peer2", uri=uris[1], memory_mb=4096, cpus=2)
    suffix = uuid_lib.uuid4().hex[:8]
    vms = [
        VMFactory(
            host=first,
            cluster=cluster,
            name=f"evac-{n}-{suffix}",
            memory_mb=256,
            vcpus=1,
            priority=priority,
        )
        for n, priority in (("a", VMPriority.LOW), ("b", VMPriority.HIGH))
    ]
    yield vms, first, second, conns
    for conn in conns:
        for vm in vms:
            for step in (conn.destroy, conn.undefine_domain):
                try:
                    step(str(vm.uuid))
                except hypervisor.HypervisorError:
                    pass
        conn.close()


def test_maintenance_migrates_both_guests_away_and_the_host_is_in_maintenance(
    two_on_peer1, admin, work
):
    vms, first, second, (one, two) = two_on_peer1
    for vm in vms:
        work(lambda vm=vm: vm_run(vm_id=vm.pk, user=admin))
        vm.refresh_from_db()
        assert vm.status == VMStatus.UP, Job.objects.order_by("-pk").first().error
    inventory.host_maintenance(host_id=first.pk, user=admin)
    assert Host.objects.get(pk=first.pk).status == HostStatus.PREPARING_FOR_MAINTENANCE
    assert work(evacuations_run) == 2  # both at once (the default limit is 2)
    jobs = Job.objects.filter(kind="vm_migrate")
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 2, [j.error for j in jobs]
    work(evacuations_run)
    assert Host.objects.get(pk=first.pk).status == HostStatus.MAINTENANCE
    for vm in vms:
        vm.refresh_from_db()
        assert (vm.status, vm.host, vm.migrating_to) == (VMStatus.UP, second, None)
        assert two.get_domain(str(vm.uuid)).state == DomainState.RUNNING
        with pytest.raises(DomainNotFound):
            one.get_domain(str(vm.uuid))
