"""Boot Options, Run Once and Change CD (issue 10, part 2) on libvirt's test driver: every VM
has a CD-ROM drive and a boot order; Run Once starts with a CD and boot order once and leaves the
saved configuration as it was; Change CD inserts or ejects (live on a running VM, at once on a
Down one); each bad request gets a clear message and changes nothing. The live XML of a real
guest: tests/integration/test_cdrom_qemu.py."""

import pytest
from django.test import Client
from django.urls import reverse
from factories import DataCenterFactory, StorageDomainFactory, UserFactory, grant
from helpers import HX, assert_messages, html_find, html_one, html_text

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase, Severity
from storage.choices import DomainFunction, IsoImageStatus, PoolStatus
from storage.images import images_offered
from storage.models import IsoImage, StorageDomainHost
from vms import cdrom, services
from vms.choices import HostStatus, VMStatus
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def iso_vm(make_vm, sync_hosts):
    """A VM of a data center with an Active ISO domain holding the guest tools ISO, an
    installer and an image still uploading (Locked); the domain's pool is Active on the host."""

    def make(status=VMStatus.DOWN, **fields):
        vm = make_vm(status, **fields)
        domain = StorageDomainFactory(
            name=f"iso-{vm.name}",
            data_center=vm.cluster.data_center,
            domain_function=DomainFunction.ISO,
        )
        StorageDomainHost.objects.create(domain=domain, host=vm.host, status=PoolStatus.ACTIVE)
        vm.images = {
            "tools": IsoImage.objects.create(
                domain=domain, name="virtio-win.iso", size_bytes=2**20, guest_tools=True
            ),
            "installer": IsoImage.objects.create(
                domain=domain, name="debian.iso", size_bytes=2**20
            ),
            "locked": IsoImage.objects.create(
                domain=domain, name="alpine.iso", size_bytes=2**20, status=IsoImageStatus.LOCKED
            ),
        }
        sync_hosts(vm.host)
        return vm

    return make


def raw_xml(vm, *, inactive=False) -> str:
    conn = hypervisor.connect(vm.host.uri)
    return conn._conn.lookupByUUIDString(str(vm.uuid)).XMLDesc(2 if inactive else 0)


def image_path(image) -> str:
    return (
        hypervisor.connect(image.domain.data_center.clusters.first().hosts.first().uri)
        .get_volume(image.domain.pool_name, image.name)
        .path
    )


def cdrom_of(vm, *, inactive=False) -> str | None:
    return hypervisor.connect(vm.host.uri).domain_cdrom(str(vm.uuid), inactive=inactive)


def boot_of(vm, *, inactive=False) -> list[str]:
    return hypervisor.connect(vm.host.uri).domain_boot_order(str(vm.uuid), inactive=inactive)


def unchanged(vm) -> tuple:
    vm.refresh_from_db()
    return (vm.status, vm.cd_image_id, vm.boot_sequence, Job.objects.count(), Event.objects.count())


# -- the domain: a CD-ROM drive and the boot order --------------------------------------------


def test_every_vm_has_an_empty_cdrom_drive_and_boots_from_its_disk(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN)
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    assert cdrom_of(vm) == ""  # a drive, empty
    assert boot_of(vm) == ["hd"]
    assert 'device="cdrom"' in raw_xml(vm).replace("'", '"')
    assert "<readonly" in raw_xml(vm)


def test_saved_boot_options_reach_the_host_at_the_next_run(admin, iso_vm, work):
    vm = iso_vm()
    installer = vm.images["installer"]
    services.vm_edit(
        vm_id=vm.pk,
        user=admin,
        description="",
        sso_enabled=True,
        boot_sequence="cdrom,hd",
        cd_image_id=installer.pk,
    )
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP
    assert cdrom_of(vm, inactive=True) == image_path(installer)
    assert boot_of(vm, inactive=True) == ["cdrom", "hd"]


# -- Run Once ---------------------------------------------------------------------------------


def test_run_once_starts_with_the_cd_and_boot_order_and_keeps_the_saved_ones(admin, iso_vm, work):
    vm = iso_vm()
    installer = vm.images["installer"]
    job = work(
        lambda: cdrom.vm_run_once(
            vm_id=vm.pk, user=admin, cd_image=installer.pk, boot_sequence="cdrom,hd,network"
        )
    )
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP and vm.started_at is not None
    assert (vm.cd_image_id, vm.boot_sequence) == (None, "hd")  # the saved configuration
    # The guest runs with the one-time options; the definition it starts with next is the saved one.
    assert cdrom_of(vm) == image_path(installer)
    assert boot_of(vm) == ["cdrom", "hd", "network"]
    assert cdrom_of(vm, inactive=True) == ""
    assert boot_of(vm, inactive=True) == ["hd"]
    phases = list(Event.objects.filter(job=job).order_by("pk").values_list("phase", flat=True))
    assert phases == [Phase.REQUESTED, Phase.STARTED, Phase.SUCCEEDED]
    done = Event.objects.get(job=job, phase=Phase.SUCCEEDED).message
    assert "debian.iso" in done and "CD-ROM, Hard Disk, Network (PXE)" in done
    assert "next start uses its saved configuration" in done


def test_the_next_run_after_run_once_uses_the_saved_configuration(admin, iso_vm, work):
    vm = iso_vm()
    work(
        lambda: cdrom.vm_run_once(
            vm_id=vm.pk,
            user=admin,
            cd_image=vm.images["tools"].pk,
            boot_sequence="cdrom,hd,network",
        )
    )
    work(lambda: services.vm_poweroff(vm_id=vm.pk, user=admin))
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP
    assert cdrom_of(vm) == ""
    assert boot_of(vm) == ["hd"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("locked", "alpine.iso is Locked: it is still being uploaded"),
        ("other_dc", "is in data center"),
        ("missing", "That image does not exist (any more), or you may not use it."),
        ("cd_first_without_cd", "from its CD-ROM: Attach CD is empty"),
        ("bad_sequence", "Choose a boot sequence from the list."),
        ("status", "the VM is Up"),
        ("pool_inactive", "is not active on host"),
    ],
)
def test_run_once_refusals_change_nothing(admin, iso_vm, case, message):
    vm = iso_vm(VMStatus.UP if case == "status" else VMStatus.DOWN)
    image, sequence = vm.images["installer"].pk, "cdrom,hd,network"
    if case == "locked":
        image = vm.images["locked"].pk
    elif case == "other_dc":
        elsewhere = StorageDomainFactory(
            data_center=DataCenterFactory(), domain_function=DomainFunction.ISO
        )
        image = IsoImage.objects.create(domain=elsewhere, name="far.iso").pk
    elif case == "missing":
        image = IsoImage.objects.order_by("-pk").first().pk + 100
    elif case == "cd_first_without_cd":
        image = None
    elif case == "bad_sequence":
        sequence = "cdrom,cdrom"
    elif case == "pool_inactive":
        StorageDomainHost.objects.update(status=PoolStatus.INACTIVE)
    before = unchanged(vm)
    with pytest.raises(ActionRefused) as refused:
        cdrom.vm_run_once(vm_id=vm.pk, user=admin, cd_image=image, boot_sequence=sequence)
    assert message in str(refused.value)
    assert unchanged(vm) == before


def test_a_saved_cd_the_host_cannot_read_refuses_run(admin, iso_vm):
    vm = iso_vm()
    VirtualMachine.objects.filter(pk=vm.pk).update(cd_image=vm.images["installer"])
    StorageDomainHost.objects.update(status=PoolStatus.INACTIVE, error="mount failed")
    before = unchanged(vm)
    with pytest.raises(ActionRefused, match=r"Cannot run .*not active on host .*: mount failed"):
        services.vm_run(vm_id=vm.pk, user=admin)
    assert unchanged(vm) == before


# -- Change CD --------------------------------------------------------------------------------


def test_change_cd_on_a_running_vm_inserts_then_ejects(admin, iso_vm, work):
    vm = iso_vm(VMStatus.UP)
    tools = vm.images["tools"]
    job = work(lambda: cdrom.vm_change_cd(vm_id=vm.pk, user=admin, cd_image=tools.pk))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP  # it never left Up
    assert vm.cd_image == tools  # kept for its next start
    # The test driver has no device update: the CD goes into the definition (live: qemu test).
    assert cdrom_of(vm, inactive=True) == image_path(tools)
    steps = list(Event.objects.filter(job=job).order_by("pk").values_list("phase", "message"))
    assert [p for p, _ in steps] == [Phase.REQUESTED, Phase.STARTED, Phase.SUCCEEDED]
    assert "virtio-win.iso was inserted" in steps[-1][1]
    job = work(lambda: cdrom.vm_change_cd(vm_id=vm.pk, user=admin, cd_image=None))
    vm.refresh_from_db()
    assert vm.cd_image is None
    assert cdrom_of(vm, inactive=True) == ""
    assert "the CD was ejected" in Event.objects.filter(job=job).order_by("pk").last().message


def test_change_cd_on_a_down_vm_changes_the_saved_cd_at_once(admin, iso_vm):
    vm = iso_vm(VMStatus.DOWN)
    assert cdrom.vm_change_cd(vm_id=vm.pk, user=admin, cd_image=vm.images["installer"].pk) is None
    vm.refresh_from_db()
    assert vm.cd_image == vm.images["installer"]
    assert not Job.objects.exists()
    (event,) = Event.objects.filter(action="change_cd")
    assert event.phase == Phase.SUCCEEDED and "used from its next start" in event.message


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("host_down", "its host {host} is Non Responsive. Nothing was changed."),
        ("status", "the VM is Powering Up"),
        ("locked", "alpine.iso is Locked"),
        ("other_dc", "is in data center"),
        ("pool_inactive", "is not active on host"),
        ("race", "another Change CD on it is in progress"),
        ("external", "defined on its host outside Vireo"),
    ],
)
def test_change_cd_refusals_change_nothing(admin, iso_vm, case, message):
    vm = iso_vm(VMStatus.POWERING_UP if case == "status" else VMStatus.UP)
    image = vm.images["tools"].pk
    if case == "host_down":
        type(vm.host).objects.filter(pk=vm.host_id).update(status=HostStatus.NON_RESPONSIVE)
    elif case == "locked":
        image = vm.images["locked"].pk
    elif case == "other_dc":
        elsewhere = StorageDomainFactory(
            data_center=DataCenterFactory(), domain_function=DomainFunction.ISO
        )
        image = IsoImage.objects.create(domain=elsewhere, name="far.iso").pk
    elif case == "pool_inactive":
        StorageDomainHost.objects.update(status=PoolStatus.INACTIVE)
    elif case == "race":  # a first Change CD, still queued, wins
        cdrom.vm_change_cd(vm_id=vm.pk, user=admin, cd_image=vm.images["installer"].pk)
    elif case == "external":
        VirtualMachine.objects.filter(pk=vm.pk).update(origin="external")
    before = unchanged(vm)
    with pytest.raises(ActionRefused) as refused:
        cdrom.vm_change_cd(vm_id=vm.pk, user=admin, cd_image=image)
    assert message.format(host=vm.host.name) in str(refused.value)
    assert unchanged(vm) == before


# -- what is offered, and to whom -------------------------------------------------------------


def test_images_offered_guest_tools_first_and_only_ok_visible_ones_of_the_data_center(iso_vm):
    vm = iso_vm()
    dc = vm.cluster.data_center
    elsewhere = StorageDomainFactory(
        data_center=DataCenterFactory(), domain_function=DomainFunction.ISO
    )
    IsoImage.objects.create(domain=elsewhere, name="aaa-far.iso")
    admin = UserFactory(is_superuser=True)
    assert [i.name for i in images_offered(admin, data_center_id=dc.pk)] == [
        "virtio-win.iso",
        "debian.iso",
    ]
    vm_user = UserFactory()
    grant(vm_user, "UserRole", vm)
    assert list(images_offered(vm_user, data_center_id=dc.pk)) == []
    with pytest.raises(ActionRefused, match="does not exist \\(any more\\), or you may not use it"):
        cdrom.vm_change_cd(vm_id=vm.pk, user=vm_user, cd_image=vm.images["tools"].pk)
    grant(vm_user, "UserRole", vm.images["tools"].domain)  # sees the ISO domain now
    assert len(images_offered(vm_user, data_center_id=dc.pk)) == 2


def test_an_image_that_goes_leaves_the_drive_empty_with_an_event(admin, iso_vm):
    vm = iso_vm()
    VirtualMachine.objects.filter(pk=vm.pk).update(cd_image=vm.images["installer"])
    vm.images["installer"].delete()
    vm.refresh_from_db()
    assert vm.cd_image is None
    event = Event.objects.get(vm=vm, action="change_cd")
    assert event.severity == Severity.WARNING
    assert "debian.iso was removed" in event.message and "empty" in event.message


# -- windows ----------------------------------------------------------------------------------


def action_url(action, vm):
    return reverse("vms:action", args=[action]) + f"?vm={vm.pk}"


def test_run_once_window_has_boot_options(admin_client, iso_vm):
    vm = iso_vm()
    window = admin_client.get(action_url("run_once", vm), headers=HX)
    assert window.status_code == 200
    assert "Run Virtual Machine(s)" in html_text(html_one(window, "h2"))
    assert html_text(html_one(window, "legend")) == "Boot Options"
    images = [html_text(o) for o in html_find(window, "select[name=cd_image] option")]
    assert images == ["[None]", "virtio-win.iso (guest tools)", "debian.iso"]
    orders = [html_text(o) for o in html_find(window, "select[name=boot_sequence] option")]
    assert orders[0] == "Hard Disk, CD-ROM, Network (PXE)" and len(orders) == 6
    response = admin_client.post(
        reverse("vms:action", args=["run_once"]),
        {"vm": vm.pk, "cd_image": vm.images["installer"].pk, "boot_sequence": "cdrom,hd,network"},
        headers=HX,
    )
    assert_messages(
        response,
        "success",
        f"Run Once: {vm.name} requested, booting from CD-ROM, Hard Disk, Network (PXE).",
    )
    vm.refresh_from_db()
    assert vm.status == VMStatus.POWERING_UP
    assert Job.objects.get().params["cd_image_id"] == vm.images["installer"].pk


def test_change_cd_window_offers_the_guest_tools_first_and_refuses_in_words(admin_client, iso_vm):
    vm = iso_vm(VMStatus.UP)
    window = admin_client.get(action_url("change_cd", vm), headers=HX)
    options = html_find(window, "select[name=cd_image] option")
    assert [html_text(o) for o in options] == [
        "[Eject]",
        "virtio-win.iso (guest tools)",
        "debian.iso",
    ]
    assert html_one(window, "select[name=cd_image] option[selected]").get("value") == str(
        vm.images["tools"].pk
    )
    type(vm.host).objects.filter(pk=vm.host_id).update(status=HostStatus.MAINTENANCE)
    response = admin_client.post(
        reverse("vms:action", args=["change_cd"]),
        {"vm": vm.pk, "cd_image": vm.images["tools"].pk},
        headers=HX,
    )
    assert f"its host {vm.host.name} is Maintenance" in html_text(html_one(response, "p.error"))
    assert not Job.objects.exists()


def test_edit_vm_boot_options_tab(admin_client, iso_vm):
    vm = iso_vm(VMStatus.UP)
    window = admin_client.get(reverse("vms:edit", args=[vm.pk]), headers=HX)
    panel = html_find(window, "fieldset.side-tab-panel")[4]
    assert html_text(panel.cssselect("legend")[0]) == "Boot Options"
    names = [e.get("name") for e in panel.cssselect("select")]
    assert names == ["first_device", "second_device", "cd_image"]
    assert "boot options take effect at its next start" in html_text(panel)
    data = {
        "description": "",
        "memory_mb": vm.memory_mb,
        "vcpus": vm.vcpus,
        "first_device": "cdrom",
        "second_device": "cdrom",
        "cd_image": vm.images["installer"].pk,
    }
    response = admin_client.post(reverse("vms:edit", args=[vm.pk]), data, headers=HX)
    assert "Second Device must differ from First Device." in response.content.decode()
    data["second_device"] = "hd"
    admin_client.post(reverse("vms:edit", args=[vm.pk]), data, headers=HX)
    vm.refresh_from_db()
    assert (vm.boot_sequence, vm.cd_image_id) == ("cdrom,hd", vm.images["installer"].pk)


def test_user_portal_cards_open_run_once_and_change_cd_where_the_role_allows(iso_vm):
    vm = iso_vm(VMStatus.DOWN)
    user = UserFactory()
    grant(user, "UserRole", vm)
    client = Client()
    client.force_login(user)
    page = client.get(reverse("user_portal"))
    run_once = html_one(page, "button[data-card-action=run_once]")
    change_cd = html_one(page, "button[data-card-action=change_cd]")
    assert run_once.get("disabled") is None and change_cd.get("disabled") is None
    assert run_once.get("hx-target") == "#modal-content"
    assert client.get(action_url("change_cd", vm), headers=HX).status_code == 200
    stranger = UserFactory()
    grant(stranger, "UserRole", StorageDomainFactory(data_center=vm.cluster.data_center))
    other = Client()
    other.force_login(stranger)
    assert other.get(action_url("change_cd", vm), headers=HX).status_code == 404
    assert other.get(action_url("run_once", vm), headers=HX).status_code == 404


def test_a_clone_has_the_boot_options_of_its_source(admin, iso_vm, work):
    vm = iso_vm()
    VirtualMachine.objects.filter(pk=vm.pk).update(
        cd_image=vm.images["installer"], boot_sequence="cdrom,hd"
    )
    clone = work(lambda: services.vm_clone(vm_id=vm.pk, user=admin, clone_name="copy"))
    clone.refresh_from_db()
    assert clone.status == VMStatus.DOWN
    assert (clone.cd_image_id, clone.boot_sequence) == (vm.images["installer"].pk, "cdrom,hd")
    assert boot_of(clone, inactive=True) == ["cdrom", "hd"]


def test_change_cd_window_on_a_down_vm_changes_the_saved_cd(admin_client, iso_vm):
    vm = iso_vm(VMStatus.DOWN)
    window = admin_client.get(action_url("change_cd", vm), headers=HX)
    assert "the CD is used from its next start" in html_text(html_one(window, "form"))
    response = admin_client.post(
        reverse("vms:action", args=["change_cd"]),
        {"vm": vm.pk, "cd_image": vm.images["installer"].pk},
        headers=HX,
    )
    assert_messages(response, "success", f"Change CD: {vm.name} will start with image debian.iso.")
    vm.refresh_from_db()
    assert vm.cd_image == vm.images["installer"] and not Job.objects.exists()
    details = admin_client.get(reverse("vms:details", args=[vm.pk, "general"]), headers=HX)
    assert html_text(html_one(details, ".attached-cd")) == "debian.iso"


def test_new_vm_with_boot_options(admin, iso_vm, work):
    vm = iso_vm()  # its data center has the ISO domain; its host the domain's pool
    cluster, data = vm.cluster, vm.disks.get().storage_domain
    fields = {
        "user": admin,
        "cluster_id": cluster.pk,
        "memory_mb": 512,
        "vcpus": 1,
        "disk_bytes": 2**30,
        "storage_domain_id": data.pk,
        "boot_sequence": "cdrom,hd",
    }
    with pytest.raises(ActionRefused, match="alpine.iso is Locked"):
        services.vm_create(name="fresh", cd_image_id=vm.images["locked"].pk, **fields)
    StorageDomainHost.objects.update(status=PoolStatus.INACTIVE)
    with pytest.raises(ActionRefused, match="is not active on host"):
        services.vm_create(name="fresh", cd_image_id=vm.images["installer"].pk, **fields)
    assert not VirtualMachine.objects.filter(name="fresh").exists()
    StorageDomainHost.objects.update(status=PoolStatus.ACTIVE)
    made = work(
        lambda: services.vm_create(name="fresh", cd_image_id=vm.images["installer"].pk, **fields)
    )
    made.refresh_from_db()
    assert made.status == VMStatus.DOWN
    assert (made.boot_sequence, made.cd_image_id) == ("cdrom,hd", vm.images["installer"].pk)
    assert cdrom_of(made, inactive=True) == image_path(vm.images["installer"])
    assert boot_of(made, inactive=True) == ["cdrom", "hd"]


def test_new_vm_window_has_boot_options(admin_client, iso_vm):
    iso_vm()
    window = admin_client.get(reverse("vms:new"), headers=HX)
    legends = [html_text(e) for e in html_find(window, "legend")]
    assert "Boot Options" in legends
    images = [html_text(o) for o in html_find(window, "select[name=cd_image] option")]
    assert images == ["[None]", "virtio-win.iso (guest tools)", "debian.iso"]
