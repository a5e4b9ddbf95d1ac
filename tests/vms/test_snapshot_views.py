"""The Snapshots sub-tab and its windows (Create, Custom Preview, Commit, Undo, Clone, Delete):
what they show, the buttons the snapshot table enables, what OK does, and who may use them
(anonymous, UserRole on the VM, UserVmEngine on the VM, UserVmEngine on another VM)."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from factories import (
    DataCenterFactory,
    DiskFactory,
    NetworkFactory,
    NicFactory,
    UserFactory,
    VMFactory,
    grant,
    profile_of,
)
from helpers import HX, GiB, html_find, html_one, html_text

from portal.kernel.models import Job
from vms.choices import SnapshotStatus, VMStatus
from vms.models import (
    Network,
    Snapshot,
    SnapshotDisk,
    SnapshotPreview,
    VirtualMachine,
)

pytestmark = pytest.mark.django_db

BUTTONS = ("Create", "Preview", "Commit", "Undo", "Clone", "Delete")


def snap(vm, description="", status=SnapshotStatus.OK, disks=(), memory=False, **fields):
    snapshot = Snapshot.objects.create(
        vm=vm,
        description=description,
        status=status,
        memory_mb=fields.pop("memory_mb", vm.memory_mb),
        vcpus=fields.pop("vcpus", vm.vcpus),
        memory_volume=f"pool/{vm.uuid}-mem{description}" if memory else "",
        **fields,
    )
    for disk in disks:
        SnapshotDisk.objects.create(
            snapshot=snapshot, disk=disk, volume_name=f"frozen-{disk.target}-{snapshot.pk}.qcow2"
        )
    return snapshot


@pytest.fixture
def vm(db):
    """A Down VM with disks vda and vdb and one NIC."""
    machine = VMFactory(name="app1", status=VMStatus.DOWN, memory_mb=2048, vcpus=2)
    DiskFactory(vm=machine, alias="app1_Disk1", target="vda")
    DiskFactory(vm=machine, alias="app1_Disk2", target="vdb")
    network = NetworkFactory(name="ovirtmgmt", data_center=machine.cluster.data_center)
    NicFactory(vm=machine, name="nic1", profile=profile_of(network))
    return machine


def disks(vm):
    return list(vm.disks.order_by("target"))


def pane(client, vm, **params):
    response = client.get(reverse("vms:details", args=[vm.pk, "snapshots"]), params, headers=HX)
    assert response.status_code == 200
    return response.content.decode()


def enabled_buttons(html: str) -> set[str]:
    """The toolbar buttons of the sub-tab that are not disabled."""
    found = {}
    for button in html_find(html, "button"):
        if button.text_content() in BUTTONS:
            found[button.text_content()] = button.get("disabled") is None
    assert set(found) == set(BUTTONS), found
    caret = html_one(html, 'button.caret[title="Custom Preview Snapshot"]')
    assert (caret.get("disabled") is None) == found["Preview"]  # the drop-down follows
    return {label for label, on in found.items() if on}


def messages(response) -> str:
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#messages"
    return response.content.decode()


# ---- The sub-tab -----------------------------------------------------------------------


def test_subtab_lists_active_vm_and_snapshots(admin_client, vm, admin):
    vda, vdb = disks(vm)
    s1 = snap(vm, "before upgrade", disks=[vda, vdb], memory=True, created_by=admin)
    s2 = snap(vm, "", disks=[vda])
    html = pane(admin_client, vm)
    assert html.startswith('<div id="vm-details"')
    assert "Active VM" in html and "Select a snapshot to see its details." in html
    rows = [row.get("data-snapshot") for row in html_find(html, "tr.snapshot-row[data-snapshot]")]
    assert rows == [str(s2.pk), str(s1.pk)]  # newest first
    for snapshot, description, memory in ((s1, "before upgrade", "Yes"), (s2, "—", "No")):
        row = html.split(f'data-snapshot="{snapshot.pk}"', 1)[1].split("</tr>", 1)[0]
        date = timezone.localtime(snapshot.created_at).strftime("%Y-%m-%d %H:%M:%S")
        assert date in row and description in row and ">Ok</span>" in row
        assert f"<td>{memory}</td>" in row
    assert html.count("snapshot-row active-vm selected") == 1


@pytest.mark.parametrize(
    ("sub", "expected", "absent"),
    [
        ("general", ["Defined Memory", "1024 MB", "Total Virtual CPUs", "Saved"], ["nic1"]),
        ("disks", ["app1_Disk1", "VirtIO (vda)", "frozen-vda-"], ["app1_Disk2"]),
        ("nics", ["Network Interfaces", "nic1", "ovirtmgmt"], ["Defined Memory"]),
        ("apps", ["No guest agent answered when this snapshot was taken"], ["Defined Memory"]),
        ("bogus", ["Defined Memory"], []),
    ],
)
def test_selected_snapshot_details(admin_client, vm, admin, sub, expected, absent):
    vda, _vdb = disks(vm)
    s1 = snap(
        vm,
        "before upgrade",
        disks=[vda],
        memory=True,
        memory_mb=1024,
        vcpus=1,
        created_by=admin,
        nics=[{"name": "nic1", "network": "ovirtmgmt"}],
    )
    html = pane(admin_client, vm, snapshot=s1.pk, sub=sub)
    assert f'snapshot-row selected" data-snapshot="{s1.pk}"' in html
    for tab in ("General", "Disks", "Network Interfaces", "Installed Applications"):
        assert f">{tab}</a>" in html
    details = html.split('class="snapshot-details"', 1)[1]
    for text in expected:
        assert text in details, text
    for text in absent:
        assert text not in details, text
    if sub == "general":
        assert admin.username in details and "before upgrade" in details
        assert f"?snapshot={s1.pk}&amp;sub=general" in html  # live refresh keeps the selection


def test_unknown_snapshot_selects_nothing(admin_client, vm):
    other = snap(VMFactory())
    html = pane(admin_client, vm, snapshot=other.pk)
    assert "Select a snapshot to see its details." in html


@pytest.mark.parametrize(
    ("vm_status", "state", "selected", "expected"),
    [
        (VMStatus.DOWN, "plain", None, {"Create"}),
        (VMStatus.DOWN, "plain", "s1", {"Create", "Preview", "Clone", "Delete"}),
        (VMStatus.UP, "plain", "s1", {"Create", "Clone", "Delete"}),  # no Preview while Up
        (VMStatus.SUSPENDED, "plain", "s1", {"Clone"}),
        (VMStatus.IMAGE_LOCKED, "plain", "s1", set()),
        (VMStatus.DOWN, "previewing", "s1", {"Commit", "Undo"}),
        (VMStatus.DOWN, "previewing", "s2", {"Commit", "Undo", "Clone"}),
        (VMStatus.DOWN, "previewing", None, {"Commit", "Undo"}),
        (VMStatus.UP, "previewing", "s1", set()),
        (VMStatus.DOWN, "locked", "s1", set()),  # one snapshot operation at a time
    ],
)
def test_buttons_follow_the_snapshot_table(admin_client, vm, vm_status, state, selected, expected):
    VirtualMachine.objects.filter(pk=vm.pk).update(status=vm_status)
    vda, vdb = disks(vm)
    s1 = snap(vm, "s1", disks=[vda, vdb])
    s2 = snap(vm, "s2", disks=[vda, vdb])
    if state == "previewing":
        Snapshot.objects.filter(pk=s1.pk).update(status=SnapshotStatus.IN_PREVIEW)
        SnapshotPreview.objects.create(vm=vm, snapshot=s1, previous_memory_mb=1, previous_vcpus=1)
    if state == "locked":
        Snapshot.objects.filter(pk=s2.pk).update(status=SnapshotStatus.LOCKED)
    params = {"snapshot": {"s1": s1.pk, "s2": s2.pk}[selected]} if selected else {}
    html = pane(admin_client, vm, **params)
    assert enabled_buttons(html) == expected
    assert ("A preview is active" in html) == (state == "previewing")


# ---- The windows -------------------------------------------------------------------------


def test_create_window(admin_client, vm):
    url = reverse("vms:snapshot_create", args=[vm.pk])
    html = admin_client.get(url, headers=HX).content.decode()
    assert "Create snapshot" in html and "Description" in html and "Disks to include" in html
    for disk in disks(vm):
        box = html_one(html, f'input[name=disks][value="{disk.pk}"]')
        assert box.get("checked") is not None, disk.alias
        assert disk.alias in html
    assert "Save Memory" not in html  # a Down VM has no memory to save
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.UP)
    html = admin_client.get(url, headers=HX).content.decode()
    assert 'name="save_memory"' in html and "Save Memory" in html


def test_create_ok_makes_the_job(admin_client, vm):
    vda, vdb = disks(vm)
    url = reverse("vms:snapshot_create", args=[vm.pk])
    response = admin_client.post(
        url, {"description": "before upgrade", "disks": [vda.pk]}, headers=HX
    )
    assert "Creating a snapshot of app1." in messages(response)
    job = Job.objects.get(kind="snapshot_create")
    assert job.params["disk_ids"] == [vda.pk] and job.params["save_memory"] is False
    snapshot = Snapshot.objects.get(vm=vm)
    assert (snapshot.description, snapshot.status) == ("before upgrade", SnapshotStatus.LOCKED)
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.IMAGE_LOCKED


def test_create_on_a_running_vm_with_memory(admin_client, vm):
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.UP)
    vda, vdb = disks(vm)
    response = admin_client.post(
        reverse("vms:snapshot_create", args=[vm.pk]),
        {"disks": [vda.pk, vdb.pk], "save_memory": "on"},
        headers=HX,
    )
    messages(response)
    job = Job.objects.get(kind="snapshot_create")
    assert job.params["save_memory"] is True and job.params["disk_ids"] == sorted([vda.pk, vdb.pk])
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.UP


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"description": "x"}, "Tick at least one of the VM&#x27;s disks under Disks to include."),
        ({"disks": ["vda"], "save_memory": "on"}, "Save Memory needs a running VM."),
    ],
)
def test_create_refused_shows_the_window_with_the_reason(admin_client, vm, data, error):
    if data.get("disks") == ["vda"]:
        data["disks"] = [disks(vm)[0].pk]
    response = admin_client.post(reverse("vms:snapshot_create", args=[vm.pk]), data, headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Create snapshot" in html and f'<p class="error" role="alert">{error}</p>' in html
    assert not Job.objects.exists() and not Snapshot.objects.exists()


def test_custom_preview_window(admin_client, vm):
    vda, vdb = disks(vm)
    s1 = snap(vm, "s1", disks=[vda, vdb], memory_mb=1024, vcpus=1)
    s2 = snap(vm, "s2", disks=[vda], memory=True)
    snap(vm, "busy", disks=[vda], status=SnapshotStatus.LOCKED)
    html = admin_client.get(
        reverse("vms:snapshot_preview", args=[vm.pk, s1.pk]), headers=HX
    ).content.decode()
    assert "Custom Preview Snapshot" in html and 'name="custom" value="1"' in html
    assert "VM Configuration" in html and "(1024 MB, 1 vCPU)" in html
    assert html_one(html, "input[name=memory]").get("disabled") is not None
    assert "not saved in this snapshot" in html
    selects = {
        select.get("name").removeprefix("disk_"): select
        for select in html_find(html, "select[name^=disk_]")
    }
    assert set(selects) == {str(vda.pk), str(vdb.pk)}
    assert "Active VM (keep as it is)" in html_text(selects[str(vda.pk)])
    options = {
        d: [o.get("value") for o in html_find(select, "option") if o.get("value", "").isdigit()]
        for d, select in selects.items()
    }
    assert sorted(options[str(vda.pk)]) == sorted([str(s1.pk), str(s2.pk)])  # not the Locked one
    assert options[str(vdb.pk)] == [str(s1.pk)]
    assert html_one(selects[str(vdb.pk)], f'option[value="{s1.pk}"]').get("selected") is not None
    html = admin_client.get(
        reverse("vms:snapshot_preview", args=[vm.pk, s2.pk]), headers=HX
    ).content.decode()
    assert html_one(html, "input[name=memory]").get("checked") is not None


def test_preview_ok_and_custom_preview_ok(admin_client, vm):
    vda, vdb = disks(vm)
    s1 = snap(vm, "s1", disks=[vda, vdb], memory=True)
    url = reverse("vms:snapshot_preview", args=[vm.pk, s1.pk])
    response = admin_client.post(url, headers=HX)  # the plain Preview button
    assert "Previewing snapshot &#x27;s1&#x27; of app1." in messages(response)
    job = Job.objects.get(kind="snapshot_preview")
    assert job.params == {
        "snapshot_id": s1.pk,
        "disks": {str(vda.pk): s1.pk, str(vdb.pk): s1.pk},
        "vm_configuration": True,
        "memory": True,
    }
    # Put it back and choose: vda from s1, vdb kept, configuration but no memory.
    job.delete()
    Snapshot.objects.filter(pk=s1.pk).update(status=SnapshotStatus.OK)
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.DOWN)
    data = {"custom": "1", "vm_configuration": "on", f"disk_{vda.pk}": s1.pk, f"disk_{vdb.pk}": ""}
    messages(admin_client.post(url, data, headers=HX))
    job = Job.objects.get(kind="snapshot_preview")
    assert job.params["disks"] == {str(vda.pk): s1.pk}
    assert (job.params["vm_configuration"], job.params["memory"]) == (True, False)


def test_preview_refusals(admin_client, vm):
    vda, vdb = disks(vm)
    s1 = snap(vm, "s1", disks=[vda, vdb])
    url = reverse("vms:snapshot_preview", args=[vm.pk, s1.pk])
    response = admin_client.post(url, {"custom": "1", f"disk_{vda.pk}": ""}, headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Custom Preview Snapshot" in html
    assert "Choose VM Configuration or at least one disk to preview." in html
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.UP)
    html = messages(admin_client.post(url, headers=HX))
    assert "Cannot preview a snapshot of app1: the VM is Up." in html and "msg error" in html
    assert not Job.objects.exists()
    assert Snapshot.objects.get(pk=s1.pk).status == SnapshotStatus.OK


@pytest.mark.parametrize(
    ("action", "title", "text"),
    [
        ("commit", "Commit Snapshot", "every later snapshot is erased"),
        ("undo", "Undo Snapshot Preview", "return app1 to its state before the preview"),
    ],
)
def test_commit_and_undo_windows(admin_client, vm, action, title, text):
    vda, _ = disks(vm)
    s1 = snap(vm, "s1", disks=[vda], status=SnapshotStatus.IN_PREVIEW)
    url = reverse("vms:snapshot_end_preview", args=[vm.pk, action])
    html = messages(admin_client.post(url, headers=HX))
    assert "no snapshot is being previewed" in html and not Job.objects.exists()
    SnapshotPreview.objects.create(vm=vm, snapshot=s1, previous_memory_mb=1, previous_vcpus=1)
    html = admin_client.get(url, headers=HX).content.decode()
    assert title in html and text in html and "<strong>s1</strong>" in html
    html = messages(admin_client.post(url, headers=HX))
    label = {"commit": "Commit", "undo": "Undo"}[action]
    assert f"{label}: app1 requested." in html
    assert Job.objects.get().kind == f"snapshot_{action}"
    assert Snapshot.objects.get(pk=s1.pk).status == SnapshotStatus.LOCKED


def test_end_preview_with_another_word_is_404(admin_client, vm):
    url = reverse("vms:snapshot_end_preview", args=[vm.pk, "revert"])
    assert admin_client.get(url, headers=HX).status_code == 404


def test_clone_window_and_ok(admin_client, vm, admin):
    vda, _ = disks(vm)
    s1 = snap(vm, "s1", disks=[vda])
    url = reverse("vms:snapshot_clone", args=[vm.pk, s1.pk])
    html = admin_client.get(url, headers=HX).content.decode()
    assert "Clone VM from Snapshot" in html and "<strong>s1</strong>" in html
    assert 'name="name" value="app1-from-snapshot"' in html and 'name="description"' in html
    response = admin_client.post(url, {"name": "bad name!", "description": ""}, headers=HX)
    assert response.status_code == 200 and 'class="error"' in response.content.decode()
    assert not Job.objects.exists()
    html = messages(admin_client.post(url, {"name": "copy1", "description": "d"}, headers=HX))
    assert "Cloning copy1 from snapshot &#x27;s1&#x27;." in html
    clone = VirtualMachine.objects.get(name="copy1")
    assert (clone.status, clone.description) == (VMStatus.IMAGE_LOCKED, "d")
    job = Job.objects.get(kind="vm_clone")
    assert (job.vm_id, job.result_vm_id, job.params["snapshot_id"]) == (vm.pk, clone.pk, s1.pk)


def test_delete_window_ok_and_free_space_refusal(admin_client, vm):
    vda, _ = disks(vm)
    vda.actual_bytes = 6 * GiB
    vda.save()
    domain = vda.storage_domain
    domain.free_bytes = 2 * GiB
    domain.save()
    s1 = snap(vm, "s1", disks=[vda])
    url = reverse("vms:snapshot_delete", args=[vm.pk, s1.pk])
    html = admin_client.get(url, headers=HX).content.decode()
    assert "Delete Snapshot" in html and "Are you sure you want to delete snapshot" in html
    html = messages(admin_client.post(url, headers=HX))
    assert (
        f"Cannot delete snapshot &#x27;s1&#x27;: merging its volumes needs 6.0 GiB free on "
        f"storage domain {domain.name}, and 2.0 GiB are free."
    ) in html
    assert not Job.objects.exists() and Snapshot.objects.get(pk=s1.pk).status == SnapshotStatus.OK
    domain.free_bytes = 10 * GiB
    domain.save()
    html = messages(admin_client.post(url, headers=HX))
    assert "Deleting snapshot &#x27;s1&#x27; of app1." in html
    assert Job.objects.get().kind == "snapshot_delete"


def test_a_snapshot_of_another_vm_is_404(admin_client, vm):
    other = VMFactory()
    foreign = snap(other, "theirs", disks=[DiskFactory(vm=other)])
    for name in ("vms:snapshot_preview", "vms:snapshot_clone", "vms:snapshot_delete"):
        url = reverse(name, args=[vm.pk, foreign.pk])
        assert admin_client.get(url, headers=HX).status_code == 404
        assert admin_client.post(url, headers=HX).status_code == 404
    assert not Job.objects.exists()


# ---- Who may use them ----------------------------------------------------------------------


def snapshot_urls(vm, snapshot):
    return [
        reverse("vms:snapshot_create", args=[vm.pk]),
        reverse("vms:snapshot_preview", args=[vm.pk, snapshot.pk]),
        reverse("vms:snapshot_end_preview", args=[vm.pk, "commit"]),
        reverse("vms:snapshot_end_preview", args=[vm.pk, "undo"]),
        reverse("vms:snapshot_clone", args=[vm.pk, snapshot.pk]),
        reverse("vms:snapshot_delete", args=[vm.pk, snapshot.pk]),
    ]


def client_with(role, obj):
    """A user holding `role` on `obj`, and NetworkAdmin on a network elsewhere, so the
    Administration Portal (and the details pane) opens for them."""
    user = UserFactory()
    grant(user, role, obj)
    grant(
        user,
        "NetworkAdmin",
        Network.objects.create(name="elsewhere", data_center=DataCenterFactory()),
    )
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_is_sent_to_login(client, vm):
    s1 = snap(vm, "s1", disks=disks(vm))
    urls = snapshot_urls(vm, s1) + [reverse("vms:details", args=[vm.pk, "snapshots"])]
    for url in urls:
        for method in (client.get, client.post):
            response = method(url, headers=HX)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("login") + "?next=")
    assert not Job.objects.exists()


def test_user_role_sees_the_snapshots_but_every_snapshot_url_is_404(vm):
    s1 = snap(vm, "s1", disks=disks(vm))
    client = client_with("UserRole", vm)
    html = pane(client, vm, snapshot=s1.pk)
    assert "s1" in html and "You may see this VM's snapshots but not act on them." in html
    assert not [b for b in html_find(html, "button") if b.text_content() in BUTTONS]
    for url in snapshot_urls(vm, s1):
        assert client.get(url, headers=HX).status_code == 404, url
        assert client.post(url, {"disks": [d.pk for d in disks(vm)]}, headers=HX).status_code == 404
    assert not Job.objects.exists()
    assert Snapshot.objects.get(pk=s1.pk).status == SnapshotStatus.OK


def test_user_vm_engine_on_the_vm_may_use_snapshots(vm):
    s1 = snap(vm, "s1", disks=disks(vm))
    client = client_with("UserVmEngine", vm)
    assert enabled_buttons(pane(client, vm, snapshot=s1.pk)) == {
        "Create",
        "Preview",
        "Clone",
        "Delete",
    }
    for url in snapshot_urls(vm, s1):
        assert client.get(url, headers=HX).status_code == 200, url
    response = client.post(
        reverse("vms:snapshot_create", args=[vm.pk]),
        {"description": "mine", "disks": [d.pk for d in disks(vm)]},
        headers=HX,
    )
    assert "Creating a snapshot of app1." in messages(response)
    assert Job.objects.get().kind == "snapshot_create"


def test_user_vm_engine_on_another_vm_gets_404(vm):
    s1 = snap(vm, "s1", disks=disks(vm))
    client = client_with("UserVmEngine", VMFactory(cluster=vm.cluster, host=vm.host))
    for url in snapshot_urls(vm, s1) + [reverse("vms:details", args=[vm.pk, "snapshots"])]:
        assert client.get(url, headers=HX).status_code == 404, url
        assert client.post(url, headers=HX).status_code in (404, 405), url
    assert not Job.objects.exists()
