"""vms.services: creating a VM (placement, sizing, refusals), and clusters and hosts.
(Split out of test_vm_services.py.)"""

import pytest
from factories import (
    ClusterFactory,
    HostFactory,
    StorageDomainFactory,
    VMFactory,
)
from helpers import GiB

from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase
from storage.choices import DiskStatus
from storage.models import Disk
from vms import services
from vms.choices import (
    HostStatus,
    VMStatus,
)
from vms.models import Host, VirtualMachine

# -- create ----------------------------------------------------------------------------------


def create(admin, host, domain, **overrides):
    fields = dict(
        user=admin,
        name="fresh",
        cluster_id=host.cluster_id,
        memory_mb=1024,
        vcpus=2,
        disk_bytes=2 * GiB,
        storage_domain_id=domain.pk,
    )
    return services.vm_create(**{**fields, **overrides})


@pytest.fixture
def placement(db):
    host = HostFactory()
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    return host, domain


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("memory_mb", 63, "Memory must be between 64 and 4,194,304 MB."),
        ("memory_mb", 4 * 1024 * 1024 + 1, "Memory must be between 64 and 4,194,304 MB."),
        ("memory_mb", "lots", "Memory must be a whole number."),
        ("memory_mb", None, "Memory must be a whole number."),
        ("vcpus", 0, "vCPUs must be between 1 and 256."),
        ("vcpus", 257, "vCPUs must be between 1 and 256."),
        ("vcpus", "2.5", "vCPUs must be a whole number."),
        ("disk_bytes", 1024, "Disk size must be between 1,048,576 and"),
        ("disk_bytes", 64 * 1024**4 + 1, "Disk size must be between 1,048,576 and"),
    ],
)
def test_create_out_of_range_is_refused(admin, placement, field, value, message):
    with pytest.raises(ActionRefused) as exc:
        create(admin, *placement, **{field: value})
    assert str(exc.value).startswith(message)
    assert not VirtualMachine.objects.exists() and not Job.objects.exists()


@pytest.mark.parametrize(("memory_mb", "vcpus"), [(64, 1), (4 * 1024 * 1024, 256)])
def test_create_accepts_the_bounds(admin, placement, memory_mb, vcpus):
    vm = create(admin, *placement, memory_mb=memory_mb, vcpus=vcpus)
    assert (vm.memory_mb, vm.vcpus) == (memory_mb, vcpus)


@pytest.mark.parametrize("sparse", [True, False])
def test_create_records_the_vm_its_disk_and_the_job(admin, placement, sparse):
    host, domain = placement
    vm = create(admin, host, domain, sparse=sparse, description="d" * 2000)
    vm.refresh_from_db()
    assert (vm.status, vm.host, vm.cluster_id, vm.created_by) == (
        VMStatus.IMAGE_LOCKED,
        host,
        host.cluster_id,
        admin,
    )
    assert len(vm.description) == 1000
    disk = Disk.objects.get(vm=vm)
    assert (disk.alias, disk.size_bytes, disk.sparse, disk.status, disk.host) == (
        "fresh_Disk1",
        2 * GiB,
        sparse,
        DiskStatus.LOCKED,
        host,
    )
    assert disk.volume_name == f"{vm.uuid}-disk1.{'qcow2' if sparse else 'img'}"
    job = Job.objects.get()
    assert (job.kind, job.vm_id, job.status) == ("vm_create", vm.pk, JobStatus.QUEUED)
    event = Event.objects.get()
    assert (event.phase, event.action, event.job_id) == (Phase.REQUESTED, "create", job.pk)
    assert event.message == f"{admin.username} asked to create VM fresh on host {host.name}."


def test_create_name_rules_apply(admin, placement):
    host, domain = placement
    VMFactory(name="dup", host=HostFactory(cluster__data_center=host.cluster.data_center))
    with pytest.raises(ActionRefused, match="Name 'dup' is already used"):
        create(admin, host, domain, name="dup")
    with pytest.raises(ActionRefused, match="^Name may contain only"):
        create(admin, host, domain, name="no spaces")
    assert VirtualMachine.objects.count() == 1


def test_create_refusals_about_placement(admin, placement):
    host, domain = placement
    foreign = StorageDomainFactory()  # another data center
    with pytest.raises(ActionRefused, match="Choose a data storage domain"):
        create(admin, host, foreign)
    with pytest.raises(ActionRefused, match="That cluster does not exist"):
        create(admin, host, domain, cluster_id=host.cluster_id + 1000)
    domain.free_bytes = GiB
    domain.save()
    with pytest.raises(ActionRefused, match="Not enough free space"):
        create(admin, host, domain, sparse=False)
    create(admin, host, domain, sparse=True)  # thin disks may overcommit
    Host.objects.filter(pk=host.pk).update(status=HostStatus.NON_RESPONSIVE)
    with pytest.raises(ActionRefused, match="No host in cluster .*: the host is Non Responsive"):
        create(admin, host, domain, name="second")
    assert VirtualMachine.objects.count() == 1


def test_create_places_the_vm_on_the_least_busy_host(admin, placement):
    busy, domain = placement
    idle = HostFactory(cluster=busy.cluster)
    VMFactory(host=busy, status=VMStatus.UP)
    VMFactory(host=idle, status=VMStatus.DOWN)
    assert create(admin, busy, domain).host == idle


# -- clusters and hosts ------------------------------------------------------------------------


def test_cluster_update(admin):
    cluster = ClusterFactory()
    services.cluster_update(
        cluster_id=cluster.pk,
        user=admin,
        shutdown_reason_enabled=True,
        shutdown_timeout="300",
        description="edited",
    )
    cluster.refresh_from_db()
    assert (cluster.shutdown_reason_enabled, cluster.shutdown_timeout, cluster.description) == (
        True,
        300,
        "edited",
    )
    event = Event.objects.get()
    assert (event.phase, event.cluster, event.object_type) == (Phase.SUCCEEDED, cluster, "cluster")
    for bad in (4, 3601, "soon"):
        with pytest.raises(ActionRefused, match="Graceful shutdown timeout"):
            services.cluster_update(
                cluster_id=cluster.pk,
                user=admin,
                shutdown_reason_enabled=False,
                shutdown_timeout=bad,
            )
    cluster.refresh_from_db()
    assert cluster.shutdown_timeout == 300 and cluster.shutdown_reason_enabled


def test_host_add(admin):
    cluster = ClusterFactory()
    host = services.host_add(
        user=admin, name="h1", uri=" qemu+ssh://root@h1/system ", cluster_id=cluster.pk
    )
    assert (host.uri, host.status) == ("qemu+ssh://root@h1/system", HostStatus.CONNECTING)
    assert Event.objects.get().host == host
    refusals = [
        ("", "qemu:///system", "Host name is required"),
        ("bad name", "qemu:///system", "Host name is required"),
        ("h2", "not a uri", "Give a libvirt URI"),
        ("h1", "qemu:///system", "already exists"),
        ("h3", "qemu+ssh://root@h1/system", "already exists"),
    ]
    for name, uri, message in refusals:
        with pytest.raises(ActionRefused, match=message):
            services.host_add(user=admin, name=name, uri=uri, cluster_id=cluster.pk)
    with pytest.raises(ActionRefused, match="That cluster does not exist"):
        services.host_add(user=admin, name="h4", uri="qemu:///system", cluster_id=cluster.pk + 1000)
    assert Host.objects.count() == 1
