"""Migrate and Cancel Migration (vms/migration.py, vms/migration_jobs.py) on test-driver hosts,
whose connection stands in for libvirt's migration (the test driver has none): the VM moves,
Migrating From meanwhile, Events with the hosts and the duration, Select Host Automatically,
the refusals that change nothing, a cancelled migration and a destination that drops."""

import pytest
from django.urls import reverse
from factories import ClusterFactory, DiskFactory, HostFactory, StorageDomainFactory
from helpers import HX, assert_messages, html_find

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase
from storage.choices import StorageType
from vms.choices import HostStatus, VMStatus
from vms.migration import vm_migrate, vm_migration_cancel
from vms.models import Host, VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(sync_hosts):
    cluster = ClusterFactory()
    made = [HostFactory(cluster=cluster, name=f"h{n}", memory_mb=8192, cpus=4) for n in (1, 2, 3)]
    sync_hosts(*made)
    return made


@pytest.fixture
def running(make_vm, hosts):
    """web1, Up on h1 with 1024 MB and 2 vCPUs, no disk."""
    return make_vm(status=VMStatus.UP, disks=0, host=hosts[0], name="web1", memory_mb=1024, vcpus=2)


def domain_state(host, vm) -> str | None:
    try:
        return hypervisor.connect(host.uri).get_domain(str(vm.uuid)).state
    except hypervisor.DomainNotFound:
        return None


def snapshot_of(vm) -> tuple:
    vm.refresh_from_db()
    return vm.status, vm.host_id, vm.migrating_to_id, Job.objects.count()


def test_migrate_to_a_chosen_host(running, hosts, admin, work):
    h1, h2, _h3 = hosts
    work(lambda: vm_migrate(vm_id=running.pk, user=admin, host_id=h2.pk))
    running.refresh_from_db()
    assert (running.status, running.host, running.migrating_to) == (VMStatus.UP, h2, None)
    assert domain_state(h2, running) == hypervisor.DomainState.RUNNING
    assert domain_state(h1, running) is None
    messages = list(
        Event.objects.filter(vm=running, action="migrate")
        .order_by("pk")
        .values_list("phase", "message")
    )
    assert messages[0] == (
        Phase.REQUESTED,
        f"{admin.username} asked to migrate VM web1 from host h1 to h2.",
    )
    assert messages[1] == (Phase.STARTED, "Started to migrate VM web1 from host h1 to h2.")
    assert messages[2][0] == Phase.SUCCEEDED
    assert messages[2][1].startswith("VM web1 was migrated from host h1 to h2 in ")


def test_select_host_automatically_takes_the_host_with_most_free_memory(
    running, hosts, admin, work, make_vm
):
    _h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h2, memory_mb=4096)
    work(lambda: vm_migrate(vm_id=running.pk, user=admin))
    running.refresh_from_db()
    assert running.host == h3
    assert Event.objects.filter(message__endswith="to h3 (selected automatically).").exists()


@pytest.mark.parametrize(
    "change, words",
    [
        (
            lambda vm, h: Host.objects.filter(pk=h.pk).update(status=HostStatus.MAINTENANCE),
            "Maintenance",
        ),
        (
            lambda vm, h: Host.objects.filter(pk=h.pk).update(cluster=ClusterFactory()),
            "the host is in cluster",
        ),
        (
            lambda vm, h: Host.objects.filter(pk=h.pk).update(memory_mb=512),
            "not enough free memory (needs 1024 MB, 512 MB free)",
        ),
        (
            lambda vm, h: Host.objects.filter(pk=h.pk).update(cpus=1),
            "too few CPUs (the VM has 2 vCPUs, the host 1)",
        ),
        (
            lambda vm, h: VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.DOWN),
            "the VM is Down",
        ),
    ],
    ids=["maintenance", "other-cluster", "memory", "cpus", "down"],
)
def test_refusals_change_nothing(running, hosts, admin, change, words):
    h2 = hosts[1]
    change(running, h2)
    before = snapshot_of(running)
    with pytest.raises(ActionRefused, match=words.replace("(", r"\(").replace(")", r"\)")):
        vm_migrate(vm_id=running.pk, user=admin, host_id=h2.pk)
    assert snapshot_of(running) == before


def test_to_its_own_host_or_with_local_disks_or_nowhere_is_refused(running, hosts, admin):
    h1, h2, h3 = hosts
    with pytest.raises(ActionRefused, match="Cannot migrate web1 to h1: the VM runs there"):
        vm_migrate(vm_id=running.pk, user=admin, host_id=h1.pk)
    Host.objects.filter(pk__in=[h2.pk, h3.pk]).update(status=HostStatus.NON_RESPONSIVE)
    with pytest.raises(
        ActionRefused,
        match="No host in cluster .* can migrate web1: h2, h3: the host is Non Responsive",
    ):
        vm_migrate(vm_id=running.pk, user=admin)
    Host.objects.filter(pk=h2.pk).update(status=HostStatus.UP)
    local = StorageDomainFactory(
        data_center=h1.cluster.data_center, name="local1", storage_type=StorageType.LOCAL
    )
    DiskFactory(vm=running, storage_domain=local, alias="web1_Disk1")
    with pytest.raises(
        ActionRefused, match="the VM's disk web1_Disk1 is on the local storage of host h1"
    ):
        vm_migrate(vm_id=running.pk, user=admin, host_id=h2.pk)
    assert not Job.objects.exists()


def test_cancel_migration_leaves_it_up_on_its_host(
    running, hosts, admin, work_off, django_capture_on_commit_callbacks
):
    h1, h2, _ = hosts
    with pytest.raises(ActionRefused, match="Cannot cancel the migration of web1: the VM is Up"):
        vm_migration_cancel(vm_id=running.pk, user=admin)
    with django_capture_on_commit_callbacks(execute=True):
        job = vm_migrate(vm_id=running.pk, user=admin, host_id=h2.pk)  # queued
    running.refresh_from_db()
    assert (running.status, running.migrating_to) == (VMStatus.MIGRATING_FROM, h2)
    vm_migration_cancel(vm_id=running.pk, user=admin)
    work_off()
    running.refresh_from_db()
    assert (running.status, running.host, running.migrating_to) == (VMStatus.UP, h1, None)
    assert domain_state(h1, running) == hypervisor.DomainState.RUNNING
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert Event.objects.filter(
        message="The migration of VM web1 to h2 was cancelled; it runs on host h1."
    ).exists()
    assert Event.objects.filter(
        message=f"{admin.username} asked to cancel the migration of VM web1."
    ).exists()


def test_a_destination_that_drops_leaves_the_vm_up_on_its_source(running, hosts, admin, work):
    h1, h2, _ = hosts
    Host.objects.filter(pk=h2.pk).update(uri=h2.uri + ".gone.xml")
    job = work(lambda: vm_migrate(vm_id=running.pk, user=admin, host_id=h2.pk))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    running.refresh_from_db()
    assert (running.status, running.host, running.migrating_to) == (VMStatus.UP, h1, None)
    assert domain_state(h1, running) == hypervisor.DomainState.RUNNING


def test_the_migrate_window(running, hosts, admin_client, work):
    url = reverse("vms:action", args=["migrate"]) + f"?vm={running.pk}"
    window = admin_client.get(url, headers=HX)
    assert window.status_code == 200
    options = [o.text for o in html_find(window, "select[name=host] option")]
    assert options == ["—", "h2", "h3"]
    labels = " ".join(html_find(window, "form")[0].itertext())
    assert "Select Host Automatically" in labels and "Select Destination Host" in labels
    missing = admin_client.post(
        reverse("vms:action", args=["migrate"]), {"vm": running.pk, "mode": "host"}, headers=HX
    )
    assert "Choose the destination host." in missing.content.decode()
    assert not Job.objects.exists()
    done = admin_client.post(
        reverse("vms:action", args=["migrate"]),
        {"vm": running.pk, "mode": "host", "host": hosts[2].pk},
        headers=HX,
    )
    assert_messages(done, "success", "Migrating web1.")
    running.refresh_from_db()
    assert (running.status, running.migrating_to) == (VMStatus.MIGRATING_FROM, hosts[2])


def test_a_paused_vm_migrates_paused_and_a_cancelled_one_stays_paused(
    hosts, admin, make_vm, work, work_off, django_capture_on_commit_callbacks
):
    h1, h2, h3 = hosts
    vm = make_vm(status=VMStatus.PAUSED, disks=0, host=h1, name="idle1", memory_mb=512)
    assert domain_state(h1, vm) == hypervisor.DomainState.PAUSED
    work(lambda: vm_migrate(vm_id=vm.pk, user=admin, host_id=h2.pk))
    vm.refresh_from_db()
    assert (vm.status, vm.host, vm.migrating_to) == (VMStatus.PAUSED, h2, None)
    assert domain_state(h2, vm) == hypervisor.DomainState.PAUSED
    assert domain_state(h1, vm) is None

    with django_capture_on_commit_callbacks(execute=True):
        vm_migrate(vm_id=vm.pk, user=admin, host_id=h3.pk)
    vm_migration_cancel(vm_id=vm.pk, user=admin)
    work_off()
    vm.refresh_from_db()
    assert (vm.status, vm.host, vm.migrating_to) == (VMStatus.PAUSED, h2, None)
    assert domain_state(h2, vm) == hypervisor.DomainState.PAUSED
