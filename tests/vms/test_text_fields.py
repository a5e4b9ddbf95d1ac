"""Control characters: every text a user types that reaches libvirt or the database is checked
by one validator (portal.kernel.validators) in the services; the windows show its message."""

import pytest
from django.urls import reverse
from helpers import GiB

import hypervisor
from accounts.models import Role
from accounts.services import role_create, role_update
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus
from portal.kernel.validators import control_character, control_characters_strip, text_check
from vms import services, snapshots
from vms.choices import SnapshotStatus, VMStatus
from vms.models import Cluster, Snapshot, VirtualMachine

BAD = ["\x00", "\x01", "\x08", "\x0b", "\x1f", "\x7f", "\x85", "\ud800", "\ufffe", "\t", "\n"]
REFUSED = (
    r"^Description contains a control character \(U\+[0-9A-F]{4}\); remove it and try again\.$"
)


@pytest.mark.parametrize("char", BAD)
def test_validator_refuses_control_characters(char):
    assert control_character(f"web{char}tier") == char
    with pytest.raises(ActionRefused, match=rf"U\+{ord(char):04X}"):
        text_check(f"web{char}tier", "Description")


@pytest.mark.parametrize("text", ["web tier", "café — ünïcode ✓", "tabs\tand\nlines"])
def test_validator_keeps_ordinary_text(text):
    multiline = "\n" in text
    assert text_check(f"  {text} ", "Description", multiline=multiline) == text
    assert control_characters_strip(text) == text


def test_validator_length():
    with pytest.raises(ActionRefused, match="too long: 11 characters, at most 10"):
        text_check("x" * 11, "Description", max_length=10)


@pytest.fixture
def vm(make_vm):
    return make_vm(VMStatus.DOWN)


def unchanged(vm) -> tuple:
    vm.refresh_from_db()
    return (
        vm.description,
        vm.status,
        Job.objects.count(),
        Event.objects.count(),
        VirtualMachine.objects.count(),
        Snapshot.objects.count(),
        Role.objects.count(),
    )


def test_every_vm_text_refuses_control_characters(admin, vm):
    snapshot = Snapshot.objects.create(
        vm=vm, description="s", status=SnapshotStatus.OK, memory_mb=1024, vcpus=1
    )
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_reason_enabled=True)
    before = unchanged(vm)
    bad = "web\x01tier"
    calls = [
        lambda: services.vm_edit(vm_id=vm.pk, user=admin, description=bad, sso_enabled=True),
        lambda: services.vm_create(
            user=admin,
            name="fresh",
            description=bad,
            cluster_id=vm.cluster_id,
            memory_mb=1024,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=vm.disks.get().storage_domain_id,
        ),
        lambda: services.cluster_update(
            cluster_id=vm.cluster_id,
            user=admin,
            shutdown_reason_enabled=True,
            shutdown_timeout=60,
            description=bad,
        ),
        lambda: snapshots.snapshot_create(
            vm_id=vm.pk, user=admin, description=bad, disk_ids=[vm.disks.get().pk]
        ),
        lambda: snapshots.snapshot_clone(
            vm_id=vm.pk, snapshot_id=snapshot.pk, user=admin, name="copy", description=bad
        ),
        lambda: role_create(
            user=admin, name="R1", description=bad, is_admin=False, actions=["view"]
        ),
    ]
    for call in calls:
        with pytest.raises(ActionRefused, match=REFUSED):
            call()
    assert unchanged(vm) == before
    assert Cluster.objects.get(pk=vm.cluster_id).description == ""


def test_shutdown_reason_refuses_control_characters(admin, make_vm):
    up = make_vm(VMStatus.UP)
    Cluster.objects.filter(pk=up.cluster_id).update(shutdown_reason_enabled=True)
    before = unchanged(up)
    with pytest.raises(ActionRefused, match=r"^Reason contains a control character \(U\+0007\)"):
        services.vm_shutdown(vm_id=up.pk, user=admin, reason="bye\x07")
    assert unchanged(up) == before


def test_role_update_refuses_control_characters(admin):
    role = role_create(user=admin, name="R2", description="ok", is_admin=False, actions=["view"])
    with pytest.raises(ActionRefused, match=REFUSED):
        role_update(
            user=admin,
            role_id=role.pk,
            name="R2",
            description="\x1b[31mred",
            is_admin=False,
            actions=["view"],
        )
    role.refresh_from_db()
    assert role.description == "ok"


def test_edit_window_shows_the_message(admin_client, vm):
    response = admin_client.post(
        reverse("vms:edit", args=[vm.pk]),
        {"description": "a\x01b", "memory_mb": vm.memory_mb, "vcpus": vm.vcpus},
        headers={"HX-Request": "true"},
    )
    assert "Description contains a control character (U+0001)" in response.content.decode()
    vm.refresh_from_db()
    assert vm.description == ""


def test_a_vm_stored_with_a_control_character_still_runs(admin, vm, work):
    """Text stored before the check is dropped on its way into the libvirt definition."""
    VirtualMachine.objects.filter(pk=vm.pk).update(description="old\x01text")
    hypervisor.disconnect(vm.host.uri)
    conn = hypervisor.connect(vm.host.uri)
    conn.undefine_domain(str(vm.uuid))
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    job = Job.objects.get(kind="vm_run")
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.UP
