"""Making VMs: New VM, Clone VM and clone from a snapshot need the right to create VMs in the
cluster, follow the one name rule, count against the user's quota, keep distinct disk aliases,
and take back everything they made when the task queue refuses the job."""

import pytest
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from factories import UserFactory, grant
from guardian.models import UserObjectPermission
from helpers import HX, GiB

from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus
from storage.choices import DiskStatus
from storage.models import Disk
from vms import services, snapshots
from vms.choices import SnapshotStatus, VMStatus
from vms.models import Quota, Snapshot, SnapshotPreview, VirtualMachine
from vms.quotas import quota_set, quota_usage


def state() -> tuple:
    """What a refused request must leave as it was."""
    return (
        sorted(VirtualMachine.objects.values_list("pk", "name", "status")),
        sorted(Disk.objects.values_list("pk", "alias", "status")),
        Job.objects.count(),
        Event.objects.count(),
        UserObjectPermission.objects.count(),
        sorted(Snapshot.objects.values_list("pk", "status")),
    )


def grants_on(vm_id: int) -> int:
    return UserObjectPermission.objects.filter(
        content_type=ContentType.objects.get_for_model(VirtualMachine), object_pk=str(vm_id)
    ).count()


def ok_snapshot(vm) -> Snapshot:
    """A snapshot of the VM's disks, as a finished Create leaves it (for the services)."""
    from vms.models import SnapshotDisk

    snapshot = Snapshot.objects.create(
        vm=vm, description="s1", status=SnapshotStatus.OK, memory_mb=vm.memory_mb, vcpus=vm.vcpus
    )
    for disk in vm.disks.all():
        SnapshotDisk.objects.create(snapshot=snapshot, disk=disk, volume_name=disk.volume_name)
    return snapshot


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


# -- item 4: the right to create VMs ------------------------------------------------------------


def test_clone_needs_the_right_to_create_vms_in_the_cluster(alice, make_vm):
    vm = make_vm(VMStatus.DOWN)
    grant(alice, "UserVmEngine", vm)  # clone on the VM, but no create_vm anywhere
    snapshot = ok_snapshot(vm)
    before = state()
    with pytest.raises(ActionRefused, match=rf"^You may not clone VMs in cluster {vm.cluster}"):
        services.vm_clone(vm_id=vm.pk, user=alice, clone_name="alice-clone")
    with pytest.raises(ActionRefused, match=rf"^You may not clone VMs in cluster {vm.cluster}"):
        snapshots.snapshot_clone(vm_id=vm.pk, snapshot_id=snapshot.pk, user=alice, name="x")
    assert state() == before
    grant(alice, "VmCreator", vm.cluster)
    clone = services.vm_clone(vm_id=vm.pk, user=alice, clone_name="alice-clone")
    assert (clone.name, clone.created_by, grants_on(clone.pk)) == ("alice-clone", alice, 1)


def test_clone_windows_refuse_without_the_right_to_create_vms(alice, make_vm, client):
    vm = make_vm(VMStatus.DOWN)
    grant(alice, "UserVmEngine", vm)
    snapshot = ok_snapshot(vm)
    client.force_login(alice)
    before = state()
    response = client.post(
        reverse("vms:action", args=["clone"]),
        {"vm": vm.pk, "clone_name": "alice-clone"},
        headers=HX,
    )
    assert "You may not clone VMs in cluster" in response.content.decode()
    response = client.post(
        reverse("vms:snapshot_clone", args=[vm.pk, snapshot.pk]), {"name": "-"}, headers=HX
    )
    assert "You may not clone VMs in cluster" in response.content.decode()
    assert state() == before


def test_new_vm_service_needs_the_right_to_create_vms(alice, make_vm):
    vm = make_vm(VMStatus.DOWN)
    domain = vm.disks.get().storage_domain
    grant(alice, "UserVmEngine", vm)
    before = state()
    with pytest.raises(ActionRefused, match="^You may not create VMs in cluster"):
        services.vm_create(
            user=alice,
            name="fresh",
            cluster_id=vm.cluster_id,
            memory_mb=1024,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=domain.pk,
        )
    assert state() == before


@pytest.mark.parametrize("name", ["-", "..", ".", "---", ".-.", " .. "])
def test_names_only_of_dots_and_dashes_are_refused_everywhere(admin, make_vm, name):
    vm = make_vm(VMStatus.DOWN)
    snapshot = ok_snapshot(vm)
    domain = vm.disks.get().storage_domain
    before = state()
    message = "needs a letter, a digit or '_': not only dots and dashes."
    with pytest.raises(ActionRefused, match=f"^Clone Name {message}"):
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name=name)
    with pytest.raises(ActionRefused, match=f"^Name {message}"):
        snapshots.snapshot_clone(vm_id=vm.pk, snapshot_id=snapshot.pk, user=admin, name=name)
    with pytest.raises(ActionRefused, match=f"^Name {message}"):
        services.vm_create(
            user=admin,
            name=name,
            cluster_id=vm.cluster_id,
            memory_mb=1024,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=domain.pk,
        )
    assert state() == before


@pytest.mark.parametrize("name", ["a.b", "-a", "_", "v-1.2", "..x"])
def test_names_with_a_letter_digit_or_underscore_are_fine(admin, make_vm, name):
    vm = make_vm(VMStatus.DOWN)
    assert services.vm_clone(vm_id=vm.pk, user=admin, clone_name=name).name == name


# -- item 4: quota ------------------------------------------------------------------------------


@pytest.fixture
def creator(alice, make_vm):
    """alice may create VMs in the cluster of a Down VM with two disks (1 and 2 GiB) she owns."""
    vm = make_vm(VMStatus.DOWN, disks=2)
    grant(alice, "ClusterAdmin", vm.cluster)
    grant(alice, "DiskCreator", vm.disks.first().storage_domain)
    VirtualMachine.objects.filter(pk=vm.pk).update(created_by=alice)
    return vm


def new_vm(user, vm, name="fresh", disk_bytes=GiB):
    return services.vm_create(
        user=user,
        name=name,
        cluster_id=vm.cluster_id,
        memory_mb=1024,
        vcpus=1,
        disk_bytes=disk_bytes,
        storage_domain_id=vm.disks.first().storage_domain_id,
    )


def test_default_quota_of_vms_counts_new_vm_and_clones(alice, creator, settings):
    settings.VIREO_QUOTA_MAX_VMS = 2
    assert quota_usage(alice).vms == 1
    new_vm(alice, creator)
    before = state()
    message = r"^Quota exceeded: alice may have at most 2 VM\(s\) and has 2\."
    with pytest.raises(ActionRefused, match=message):
        new_vm(alice, creator, name="third")
    with pytest.raises(ActionRefused, match=message):
        services.vm_clone(vm_id=creator.pk, user=alice, clone_name="copy")
    with pytest.raises(ActionRefused, match=message):
        snapshots.snapshot_clone(
            vm_id=creator.pk, snapshot_id=ok_snapshot(creator).pk, user=alice, name="copy"
        )
    assert state()[:5] == before[:5]
    # Her own quota overrides the default.
    Quota.objects.create(user=alice, max_vms=3)
    assert services.vm_clone(vm_id=creator.pk, user=alice, clone_name="copy").name == "copy"


def test_quota_of_disk_space(alice, creator, settings):
    settings.VIREO_QUOTA_MAX_DISK_GIB = 5  # she uses 3 GiB (1 + 2)
    before = state()
    with pytest.raises(ActionRefused, match=r"^Quota exceeded: the disks would need 3\.0 GiB"):
        services.vm_clone(vm_id=creator.pk, user=alice, clone_name="copy")
    with pytest.raises(ActionRefused, match="uses 3.0 of 5 GiB"):
        new_vm(alice, creator, disk_bytes=3 * GiB)
    assert state() == before
    new_vm(alice, creator, disk_bytes=2 * GiB)  # exactly 5 GiB
    assert quota_usage(alice).disk_bytes == 5 * GiB


def test_superusers_have_no_quota(admin, creator, settings):
    settings.VIREO_QUOTA_MAX_VMS = 0
    settings.VIREO_QUOTA_MAX_DISK_GIB = 0
    assert services.vm_clone(vm_id=creator.pk, user=admin, clone_name="copy")


def test_quota_set_needs_system_configure_right(alice, admin):
    with pytest.raises(ActionRefused, match="You may not change quotas"):
        quota_set(user=alice, target_user_id=alice.pk, max_vms=100)
    quota_set(user=admin, target_user_id=alice.pk, max_vms="4", max_disk_gib="")
    assert Quota.objects.values_list("max_vms", "max_disk_gib").get(user=alice) == (4, None)
    with pytest.raises(ActionRefused, match="VMs must be a whole number"):
        quota_set(user=admin, target_user_id=alice.pk, max_vms="many")
    quota_set(user=admin, target_user_id=alice.pk)  # both empty: back to the default
    assert not Quota.objects.filter(user=alice).exists()


def test_quota_page_and_window(admin_client, alice, creator, client, settings):
    settings.VIREO_QUOTA_MAX_VMS = 10
    page = admin_client.get(reverse("vms:quotas")).content.decode()
    assert "alice" in page and "1 of 10" in page
    response = admin_client.post(
        reverse("vms:quota_edit", args=[alice.pk]), {"max_vms": "2", "max_disk_gib": "50"}
    )
    assert response.status_code == 302
    assert Quota.objects.values_list("max_vms", "max_disk_gib").get(user=alice) == (2, 50)
    assert "1 of 2" in admin_client.get(reverse("vms:quotas")).content.decode()
    # A ClusterAdmin enters the Administration Portal but may not configure quotas.
    client.force_login(alice)
    assert client.get(reverse("vms:quotas")).status_code == 404
    assert (
        client.post(reverse("vms:quota_edit", args=[alice.pk]), {"max_vms": 99}).status_code == 404
    )
    assert Quota.objects.get(user=alice).max_vms == 2


# -- item 10: a queue that answers PING but refuses the job ---------------------------------------


def test_refused_clone_takes_back_the_clone(
    alice, creator, refusing_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        clone = services.vm_clone(vm_id=creator.pk, user=alice, clone_name="copy")
    assert not VirtualMachine.objects.filter(pk=clone.pk).exists()
    assert grants_on(clone.pk) == 0
    assert not Disk.objects.filter(vm_id=clone.pk).exists()
    creator.refresh_from_db()
    assert creator.status == VMStatus.DOWN
    job = Job.objects.get(kind="vm_clone")
    assert job.status == JobStatus.FAILED and "NOREPLICAS" in job.error


def test_refused_clone_from_snapshot_takes_back_the_clone(
    alice, creator, refusing_queue, django_capture_on_commit_callbacks
):
    snapshot = ok_snapshot(creator)
    with django_capture_on_commit_callbacks(execute=True):
        clone = snapshots.snapshot_clone(
            vm_id=creator.pk, snapshot_id=snapshot.pk, user=alice, name="copy"
        )
    assert not VirtualMachine.objects.filter(pk=clone.pk).exists()
    assert grants_on(clone.pk) == 0
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.OK
    assert Job.objects.get(kind="vm_clone").status == JobStatus.FAILED


def test_refused_new_vm_takes_back_the_vm_its_disk_and_grant(
    alice, creator, refusing_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        vm = new_vm(alice, creator)
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert not Disk.objects.filter(vm_id=vm.pk).exists()
    assert grants_on(vm.pk) == 0
    assert Job.objects.get(kind="vm_create").status == JobStatus.FAILED


def test_refused_snapshot_and_disk_attach_put_everything_back(
    admin, make_vm, refusing_queue, django_capture_on_commit_callbacks
):
    from vms.disks import disk_attach

    vm = make_vm(VMStatus.DOWN)
    floating = Disk.objects.create(
        alias="spare",
        storage_domain=vm.disks.get().storage_domain,
        host=vm.host,
        volume_name="spare.qcow2",
        size_bytes=GiB,
    )
    with django_capture_on_commit_callbacks(execute=True):
        snapshots.snapshot_create(
            vm_id=vm.pk, user=admin, description="s", disk_ids=[vm.disks.get().pk]
        )
    assert not Snapshot.objects.exists()
    vm.refresh_from_db()
    assert vm.status == VMStatus.DOWN
    with django_capture_on_commit_callbacks(execute=True):
        disk_attach(disk_id=floating.pk, vm_id=vm.pk, user=admin)
    floating.refresh_from_db()
    vm.refresh_from_db()
    assert (floating.status, floating.vm_id, vm.status) == (DiskStatus.OK, None, VMStatus.DOWN)
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.FAILED}


# -- item 16: distinct disk aliases ------------------------------------------------------------


def test_clone_keeps_distinct_disk_aliases(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN, disks=3)
    # An attached floating disk keeps its own alias: every source alias ends in _Disk1.
    for n, disk in enumerate(vm.disks.order_by("target")):
        Disk.objects.filter(pk=disk.pk).update(alias=f"extra{n}_Disk1")
    clone = work(lambda: services.vm_clone(vm_id=vm.pk, user=admin, clone_name="copy"))
    assert Job.objects.get(kind="vm_clone").status == JobStatus.SUCCEEDED
    assert list(clone.disks.order_by("target").values_list("alias", "target")) == [
        ("copy_Disk1", "vda"),
        ("copy_Disk2", "vdb"),
        ("copy_Disk3", "vdc"),
    ]


def test_clone_from_snapshot_keeps_distinct_disk_aliases(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN, disks=2)
    Disk.objects.filter(vm=vm).update(alias="same_Disk1")
    work(
        lambda: snapshots.snapshot_create(
            vm_id=vm.pk,
            user=admin,
            description="s1",
            disk_ids=vm.disks.values_list("pk", flat=True),
        )
    )
    snapshot = Snapshot.objects.get(vm=vm)
    clone = work(
        lambda: snapshots.snapshot_clone(
            vm_id=vm.pk, snapshot_id=snapshot.pk, user=admin, name="from-s1"
        )
    )
    job = Job.objects.get(kind="vm_clone")
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert list(clone.disks.order_by("target").values_list("alias", flat=True)) == [
        "from-s1_Disk1",
        "from-s1_Disk2",
    ]


# -- item 17: a snapshot preview -----------------------------------------------------------------


def previewing(vm) -> SnapshotPreview:
    snapshot = ok_snapshot(vm)
    Snapshot.objects.filter(pk=snapshot.pk).update(status=SnapshotStatus.IN_PREVIEW)
    return SnapshotPreview.objects.create(
        vm=vm, snapshot=snapshot, previous_memory_mb=vm.memory_mb, previous_vcpus=vm.vcpus
    )


def test_clone_is_refused_during_a_preview(admin, make_vm):
    vm = make_vm(VMStatus.DOWN)
    previewing(vm)
    before = state()
    with pytest.raises(ActionRefused) as exc:
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name="copy")
    assert str(exc.value) == (
        f"Cannot clone {vm.name}: a snapshot preview is active; Commit or Undo it first."
    )
    assert state() == before


def test_clone_and_remove_are_disabled_during_a_preview(admin_client, make_vm):
    vm = make_vm(VMStatus.DOWN)
    row = admin_client.get(reverse("vms:row", args=[vm.pk])).content.decode()
    assert 'data-actions="' in row and "clone" in row.split('data-actions="')[1].split('"')[0]
    previewing(vm)
    row = admin_client.get(reverse("vms:row", args=[vm.pk])).content.decode()
    actions = set(row.split('data-actions="')[1].split('"')[0].split())
    assert actions == {"run", "run_once", "change_cd"}


def test_clone_button_needs_the_right_to_create_vms(alice, make_vm, client):
    vm = make_vm(VMStatus.DOWN)
    grant(alice, "UserVmEngine", vm)
    client.force_login(alice)

    def row_actions() -> set[str]:
        from vms.selectors import vm_rows

        return set(vm_rows(alice, [VirtualMachine.objects.get(pk=vm.pk)])[0].actions)

    assert row_actions() == {"run", "run_once", "change_cd", "remove"}
    grant(alice, "VmCreator", vm.cluster)
    assert row_actions() == {"run", "run_once", "change_cd", "remove", "clone"}
