"""vms.services: hosts and the queue, the shutdown reason, Remove and Clone VM's names.
(Split out of test_vm_services.py.)"""

import pytest
from factories import (
    ClusterFactory,
    DataCenterFactory,
    DiskFactory,
    HostFactory,
    StorageDomainFactory,
    VMFactory,
)
from helpers import GiB
from vm_services_support import call_action, closed_queue, snapshot

import portal.kernel.tasks
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus
from storage.choices import DiskStatus
from storage.models import Disk
from vms import services
from vms.actions import VMAction
from vms.choices import HostStatus, VMStatus
from vms.models import Cluster, VirtualMachine

# -- hosts and the queue --------------------------------------------------------------------


def test_host_non_responsive_refuses_every_action(admin):
    host = HostFactory(status=HostStatus.NON_RESPONSIVE)
    up = VMFactory(host=host, status=VMStatus.UP)
    down = VMFactory(host=host, status=VMStatus.DOWN)
    before = snapshot(up)
    with pytest.raises(ActionRefused) as exc:
        services.vm_shutdown(vm_id=up.pk, user=admin)
    assert str(exc.value) == (
        f"Cannot shut down {up.name}: its host {host.name} is Non Responsive."
    )
    with pytest.raises(ActionRefused, match="Non Responsive"):
        services.vm_run(vm_id=down.pk, user=admin)
    with pytest.raises(ActionRefused, match="Non Responsive"):
        services.vm_clone(vm_id=down.pk, user=admin, clone_name="copy")
    # Remove too: its domain and volumes live on that host, and a job that cannot reach it
    # would only leave the VM Unknown.
    down_before = snapshot(down)
    with pytest.raises(ActionRefused, match="Non Responsive"):
        services.vm_remove(vm_id=down.pk, user=admin)
    assert snapshot(up) == before
    assert snapshot(down) == down_before


def test_vm_without_host_cannot_run_but_can_be_removed(admin):
    vm = VMFactory(host=None, cluster=ClusterFactory(), status=VMStatus.DOWN)
    with pytest.raises(ActionRefused, match="has no host to run"):
        services.vm_run(vm_id=vm.pk, user=admin)
    services.vm_remove(vm_id=vm.pk, user=admin)
    assert Job.objects.get().kind == "vm_remove"


@pytest.mark.parametrize("action", [VMAction.SHUTDOWN, VMAction.REMOVE, VMAction.CLONE])
def test_redis_unreachable_refuses_and_changes_nothing(admin, monkeypatch, action):
    status = VMStatus.UP if action == VMAction.SHUTDOWN else VMStatus.DOWN
    vm = VMFactory(status=status)
    DiskFactory(vm=vm)
    before = snapshot(vm)
    monkeypatch.setattr(portal.kernel.tasks, "get_queue", closed_queue)
    with pytest.raises(ActionRefused) as exc:
        call_action(action, vm, admin)
    assert "task queue is unreachable" in str(exc.value)
    assert "nothing was changed" in str(exc.value)
    assert snapshot(vm) == before


def test_redis_unreachable_refuses_create(admin, monkeypatch):
    host = HostFactory()
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    monkeypatch.setattr(portal.kernel.tasks, "get_queue", closed_queue)
    with pytest.raises(ActionRefused, match="task queue is unreachable"):
        services.vm_create(
            user=admin,
            name="new",
            cluster_id=host.cluster_id,
            memory_mb=1024,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=domain.pk,
        )
    assert not VirtualMachine.objects.exists() and not Disk.objects.exists()


def test_queue_refusing_at_commit_puts_the_vm_back(
    admin, monkeypatch, django_capture_on_commit_callbacks
):
    """Redis answered the ping but refused the enqueue after commit: the Job fails with the
    queue's message and the VM returns to the status it had."""
    vm = VMFactory(status=VMStatus.UP)
    monkeypatch.setattr(services, "queue_ensure_available", lambda: None)
    monkeypatch.setattr(portal.kernel.tasks, "get_queue", closed_queue)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.vm_shutdown(vm_id=vm.pk, user=admin)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("The task queue refused the job: ")
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP


# -- shutdown reason ---------------------------------------------------------------------------


def test_shutdown_reason_kept_when_the_cluster_enables_it(admin):
    vm = VMFactory(status=VMStatus.UP)
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_reason_enabled=True)
    job = services.vm_shutdown(vm_id=vm.pk, user=admin, reason="  kernel update  ")
    assert job.params["reason"] == "kernel update"
    event = Event.objects.get(job=job)
    assert event.reason == "kernel update"


def test_shutdown_reason_dropped_when_the_cluster_does_not_ask(admin):
    vm = VMFactory(status=VMStatus.UP)
    assert not vm.cluster.shutdown_reason_enabled
    job = services.vm_shutdown(vm_id=vm.pk, user=admin, reason="kernel update")
    assert job.params["reason"] == ""
    assert Event.objects.get(job=job).reason == ""


def test_shutdown_reason_is_capped(admin):
    vm = VMFactory(status=VMStatus.UP)
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_reason_enabled=True)
    job = services.vm_shutdown(vm_id=vm.pk, user=admin, reason="x" * 5000)
    assert job.params["reason"] == "x" * 1000


def test_reason_is_only_for_shutdown(admin):
    vm = VMFactory(status=VMStatus.UP)
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_reason_enabled=True)
    job = services.vm_action(
        vm_id=vm.pk, action=VMAction.POWER_OFF, user=admin, reason="not for power off"
    )
    assert job.params["reason"] == ""
    assert Event.objects.get(job=job).reason == ""


# -- remove ----------------------------------------------------------------------------------


@pytest.mark.parametrize("remove_disks", [True, False])
def test_remove_locks_the_disks_and_keeps_the_choice(admin, remove_disks):
    vm = VMFactory(status=VMStatus.DOWN)
    disks = [DiskFactory(vm=vm), DiskFactory(vm=vm, target="vdb")]
    other = DiskFactory(vm=VMFactory(host=vm.host, status=VMStatus.DOWN))
    job = services.vm_remove(vm_id=vm.pk, user=admin, remove_disks=remove_disks)
    assert job.params["remove_disks"] is remove_disks
    for disk in disks:
        disk.refresh_from_db()
        assert disk.status == DiskStatus.LOCKED
    other.refresh_from_db()
    assert other.status == DiskStatus.OK
    assert Event.objects.get(job=job).message == f"{admin.username} asked to remove VM {vm.name}."


# -- clone names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clone_name", "message"),
    [
        ("", "Clone Name is required."),
        ("   ", "Clone Name is required."),
        ("a" * 256, "Clone Name is too long: 256 characters, at most 255."),
        ("my clone", "Clone Name may contain only letters, digits, '-', '_' and '.'."),
        ("a/b", "Clone Name may contain only letters, digits"),
        ("vm;rm", "Clone Name may contain only letters, digits"),
        ("café", "Clone Name may contain only letters, digits"),
        ("tab\there", "Clone Name may contain only letters, digits"),
    ],
)
def test_clone_name_rules(admin, clone_name, message):
    vm = VMFactory(status=VMStatus.DOWN)
    before = snapshot(vm)
    with pytest.raises(ActionRefused) as exc:
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name=clone_name)
    assert str(exc.value).startswith(message)
    assert snapshot(vm) == before


def test_clone_name_of_255_characters_is_allowed(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    clone = services.vm_clone(vm_id=vm.pk, user=admin, clone_name="a" * 255)
    assert clone.name == "a" * 255


def test_clone_name_taken_in_the_same_cluster(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    VMFactory(name="taken", host=vm.host)
    before = snapshot(vm)
    with pytest.raises(ActionRefused) as exc:
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name="taken")
    assert str(exc.value) == (
        "Clone Name 'taken' is already used by another virtual machine in this data center."
    )
    assert snapshot(vm) == before
    with pytest.raises(ActionRefused, match="already used"):
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name=vm.name)


def test_clone_name_taken_in_another_cluster_of_the_data_center(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    other_cluster = ClusterFactory(data_center=vm.cluster.data_center)
    VMFactory(name="elsewhere", host=HostFactory(cluster=other_cluster))
    with pytest.raises(ActionRefused, match="'elsewhere' is already used"):
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name="elsewhere")
    assert VirtualMachine.objects.filter(name="elsewhere").count() == 1


def test_clone_name_used_in_another_data_center_is_allowed(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    VMFactory(name="shared-name", host=HostFactory(cluster__data_center=DataCenterFactory()))
    clone = services.vm_clone(vm_id=vm.pk, user=admin, clone_name=" shared-name ")
    assert clone.name == "shared-name"
    assert VirtualMachine.objects.filter(name="shared-name").count() == 2


def test_clone_makes_an_image_locked_copy(admin):
    vm = VMFactory(status=VMStatus.DOWN, memory_mb=2048, vcpus=3, description="web tier")
    clone = services.vm_clone(vm_id=vm.pk, user=admin, clone_name="web-2")
    clone.refresh_from_db()
    assert (clone.status, clone.memory_mb, clone.vcpus, clone.description) == (
        VMStatus.IMAGE_LOCKED,
        2048,
        3,
        "web tier",
    )
    assert (clone.cluster_id, clone.host_id, clone.created_by) == (vm.cluster_id, vm.host_id, admin)
    vm.refresh_from_db()
    assert vm.status == VMStatus.IMAGE_LOCKED
    job = Job.objects.get()
    assert (job.kind, job.vm_id, job.result_vm_id) == ("vm_clone", vm.pk, clone.pk)
    assert Event.objects.get().message == f"{admin.username} asked to clone VM {vm.name} to web-2."
