"""Views of the Storage tab (storage domains, disks, the floating-disk windows), each tried
anonymous, logged in without permission, permitted, and on an object that is not there."""

import pytest
from django.test import Client
from django.urls import reverse
from factories import DiskFactory, HostFactory, StorageDomainFactory, VMFactory
from helpers import HX, GiB, assert_messages, html_find, html_one, html_text

from portal.kernel.models import Job, JobStatus
from storage.choices import DiskStatus
from storage.models import Disk
from vms.choices import VMStatus

MISSING = 999_999_999

# Measured, the same for 5 and for 60 disks: session, user, the disks (VM, storage domain and
# host joined).
DISK_LIST_QUERIES = 4  # session, user, the page's count, its disks with VM, domain and host


@pytest.fixture
def floating():
    """A floating disk on a host, and a Down VM on that host that can take it."""
    vm = VMFactory(name="down1", status=VMStatus.DOWN)
    domain = StorageDomainFactory(name="data1", data_center=vm.cluster.data_center)
    disk = DiskFactory(vm=None, alias="spare_Disk1", storage_domain=domain, host=vm.host)
    return disk, vm


def disk_rows(response) -> dict:
    """alias -> the Attached To cell (an lxml element) of each row of the Disks list."""
    rows = {}
    for row in html_find(response, "tr[id^=disk-]"):
        alias, attached_to = row.findall("td")[:2]
        rows[html_text(alias)] = attached_to
    return rows


# ---- Anonymous ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method,name,args,headers",
    [
        ("get", "storage:domains", [], {}),
        ("get", "storage:domains", [], HX),
        ("get", "storage:disks", [], {}),
        ("get", "storage:disks", [], HX),
        ("get", "storage:disk_attach", [1], HX),
        ("post", "storage:disk_attach", [1], HX),
        ("get", "storage:disk_remove", [1], HX),
        ("post", "storage:disk_remove", [1], HX),
    ],
)
def test_anonymous_is_sent_to_login(client, method, name, args, headers):
    response = getattr(client, method)(reverse(name, args=args), headers=headers)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


# ---- Logged in without permission ---------------------------------------------------------


def test_no_permission_sees_empty_lists_and_404(user_client, floating):
    disk, vm = floating
    for url in (reverse("storage:domains"), reverse("storage:disks")):
        for headers in ({}, HX):
            response = user_client.get(url, headers=headers)
            assert response.status_code == 200
            html = response.content.decode()
            assert "data1" not in html and "spare_Disk1" not in html
    assert "No storage domains." in user_client.get(reverse("storage:domains")).content.decode()
    assert "No disks." in user_client.get(reverse("storage:disks")).content.decode()
    for name in ("storage:disk_attach", "storage:disk_remove"):
        url = reverse(name, args=[disk.pk])
        assert user_client.get(url, headers=HX).status_code == 404
        assert user_client.post(url, {"vm": vm.pk}, headers=HX).status_code == 404
    disk.refresh_from_db()
    assert disk.status == DiskStatus.OK and disk.vm is None
    assert not Job.objects.exists()


# ---- Objects that are not there -------------------------------------------------------------


def test_missing_disk_is_404(admin_client):
    for name in ("storage:disk_attach", "storage:disk_remove"):
        url = reverse(name, args=[MISSING])
        assert admin_client.get(url, headers=HX).status_code == 404
        assert admin_client.post(url, headers=HX).status_code == 404


# ---- Storage domains --------------------------------------------------------------------------


def test_domain_list_shows_total_used_free(admin_client):
    domain = StorageDomainFactory(
        name="data1", total_bytes=100 * GiB, used_bytes=30 * GiB, free_bytes=70 * GiB
    )
    page = admin_client.get(reverse("storage:domains"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html and "Storage Domains" in html
    (row,) = [tr for tr in html_find(html, "tr") if tr.findtext("td") == "data1"]
    cells = [html_text(td) for td in html_find(row, "td.num")]
    assert cells == ["100.0 GiB", "30.0 GiB", "70.0 GiB"]
    row = html_text(row)
    assert domain.data_center.name in row and "Active" in row and "Data" in row
    partial = admin_client.get(reverse("storage:domains"), headers=HX).content.decode()
    assert partial.startswith('<div id="domain-results"') and "70.0 GiB" in partial


# ---- Disks ------------------------------------------------------------------------------------


def test_disk_list_shows_vm_or_floating(admin_client, floating):
    disk, vm = floating
    attached = DiskFactory(vm=vm, alias="down1_Disk1", size_bytes=2 * GiB)
    page = admin_client.get(reverse("storage:disks"))
    assert page.status_code == 200
    rows = disk_rows(page)
    floating_mark = html_one(rows["spare_Disk1"], "em.floating")
    assert html_text(floating_mark) == html_text(rows["spare_Disk1"]) == "floating"
    link = html_one(rows["down1_Disk1"], "a")
    assert (link.get("href"), html_text(link)) == (reverse("vms:detail", args=[vm.pk]), "down1")
    assert html_text(rows["down1_Disk1"]) == "down1"
    html = page.content.decode()
    # Attach and Remove are offered for the floating disk only.
    assert reverse("storage:disk_attach", args=[disk.pk]) in html
    assert reverse("storage:disk_remove", args=[disk.pk]) in html
    assert reverse("storage:disk_attach", args=[attached.pk]) not in html
    assert reverse("storage:disk_remove", args=[attached.pk]) not in html
    assert "2.0 GiB" in html
    only = admin_client.get(reverse("storage:disks"), {"floating": 1}, headers=HX)
    assert only.content.decode().startswith('<div id="disk-results"')
    assert list(disk_rows(only)) == ["spare_Disk1"]
    assert "?floating=1" in only.content.decode()  # live refresh keeps the filter


@pytest.mark.parametrize("n", [5, 60])
def test_disk_list_runs_constant_queries(admin_client, django_assert_max_num_queries, settings, n):
    host = HostFactory()
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    vms = [VMFactory(host=host) for _ in range(3)]
    Disk.objects.bulk_create(
        Disk(
            alias=f"d{i:03d}",
            vm=vms[i % 4] if i % 4 < 3 else None,
            storage_domain=domain,
            host=host if i % 2 else None,
            volume_name=f"d{i}.qcow2",
            size_bytes=GiB,
        )
        for i in range(n)
    )
    for params, headers in (({}, {}), ({}, HX), ({"floating": 1}, {})):
        with django_assert_max_num_queries(DISK_LIST_QUERIES):
            response = admin_client.get(reverse("storage:disks"), params, headers=headers)
        assert response.status_code == 200
    first = admin_client.get(reverse("storage:disks"))
    assert len(disk_rows(first)) == min(n, settings.VIREO_PAGE_SIZE)  # one page
    assert f"of {n}" in html_text(html_one(first, ".pager"))


def test_attach_window_lists_down_vms_of_the_data_center(admin_client, floating):
    disk, vm = floating
    dc = vm.cluster.data_center
    VMFactory(name="up1", status=VMStatus.UP, host=vm.host)
    VMFactory(name="elsewhere", status=VMStatus.DOWN)  # another data center
    response = admin_client.get(reverse("storage:disk_attach", args=[disk.pk]), headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Attach Disk spare_Disk1" in html
    assert [html_text(o) for o in html_find(html, "option") if o.get("value", "").isdigit()] == [
        "down1"
    ]
    assert dc.name  # the window is about this data center only


def test_attach_window_without_candidates(admin_client, floating):
    disk, vm = floating
    vm.status = VMStatus.UP
    vm.save()
    html = admin_client.get(reverse("storage:disk_attach", args=[disk.pk]), headers=HX)
    assert "No Down virtual machine in this data center can take the disk." in html.content.decode()


def test_attach_floating_disk(admin_client, admin, floating):
    disk, vm = floating
    response = admin_client.post(
        reverse("storage:disk_attach", args=[disk.pk]), {"vm": vm.pk}, headers=HX
    )
    assert_messages(response, "success", "Attaching spare_Disk1.")
    disk.refresh_from_db()
    assert disk.status == DiskStatus.LOCKED
    job = Job.objects.get()
    assert (job.kind, job.vm, job.user, job.status) == ("disk_attach", vm, admin, JobStatus.QUEUED)
    assert job.params == {"disk_id": disk.pk, "target": "vda"}


def test_attach_to_a_vm_not_offered_shows_error(admin_client, floating):
    disk, vm = floating
    up = VMFactory(status=VMStatus.UP, host=vm.host)
    response = admin_client.post(
        reverse("storage:disk_attach", args=[disk.pk]), {"vm": up.pk}, headers=HX
    )
    assert response.status_code == 200
    assert "HX-Retarget" not in response
    assert "Select a valid choice." in response.content.decode()
    disk.refresh_from_db()
    assert disk.status == DiskStatus.OK and not Job.objects.exists()


def test_attach_refused_for_an_attached_disk(admin_client, floating):
    _, vm = floating
    other = VMFactory(status=VMStatus.DOWN, host=vm.host)
    attached = DiskFactory(vm=other, alias="other_Disk1")
    url = reverse("storage:disk_attach", args=[attached.pk])
    window = admin_client.get(url, headers=HX)
    assert window.status_code == 200
    assert "Disk other_Disk1 is attached to a VM; only floating disks" in window.content.decode()
    assert 'type="submit"' not in window.content.decode()
    response = admin_client.post(url, {"vm": vm.pk}, headers=HX)
    assert response.status_code == 200
    assert "Disk other_Disk1 is attached to a VM; only floating disks" in response.content.decode()
    attached.refresh_from_db()
    assert (attached.vm, attached.status) == (other, DiskStatus.OK)
    assert not Job.objects.exists()


def test_remove_window_and_remove_floating_disk(admin_client, admin, floating):
    disk, _ = floating
    url = reverse("storage:disk_remove", args=[disk.pk])
    window = admin_client.get(url, headers=HX)
    assert window.status_code == 200
    html = window.content.decode()
    assert "Remove Disk(s)" in html and "<strong>spare_Disk1</strong>" in html
    assert f'hx-post="{url}"' in html
    assert not Job.objects.exists()
    response = admin_client.post(url, headers=HX)
    assert_messages(response, "success", "Removing disk spare_Disk1.")
    disk.refresh_from_db()
    assert disk.status == DiskStatus.LOCKED
    job = Job.objects.get()
    assert (job.kind, job.user, job.params) == ("disk_remove", admin, {"disk_id": disk.pk})


def test_remove_refused_for_an_attached_disk(admin_client, floating):
    _, vm = floating
    attached = DiskFactory(vm=vm, alias="down1_Disk1")
    url = reverse("storage:disk_remove", args=[attached.pk])
    window = admin_client.get(url, headers=HX)
    assert window.status_code == 200
    assert "Disk down1_Disk1 is attached to a VM; only floating disks" in window.content.decode()
    assert 'type="submit"' not in window.content.decode()
    response = admin_client.post(url, headers=HX)
    assert_messages(
        response,
        "error",
        "Disk down1_Disk1 is attached to a VM; only floating disks can be changed here.",
    )
    attached.refresh_from_db()
    assert (attached.vm, attached.status) == (vm, DiskStatus.OK)
    assert not Job.objects.exists()


def test_remove_refused_for_a_locked_disk(admin_client, floating):
    disk, _ = floating
    Disk.objects.filter(pk=disk.pk).update(status=DiskStatus.LOCKED)
    for name in ("storage:disk_attach", "storage:disk_remove"):
        window = admin_client.get(reverse(name, args=[disk.pk]), headers=HX)
        assert window.status_code == 200
        assert "Disk spare_Disk1 is Locked." in window.content.decode()
        assert 'type="submit"' not in window.content.decode()
    response = admin_client.post(reverse("storage:disk_remove", args=[disk.pk]), headers=HX)
    assert_messages(response, "error", "Disk spare_Disk1 is Locked.")
    assert not Job.objects.exists()


def test_remove_without_htmx_redirects_to_disks(admin_client, floating):
    disk, _ = floating
    response = admin_client.post(reverse("storage:disk_remove", args=[disk.pk]), follow=True)
    assert response.redirect_chain == [(reverse("storage:disks"), 302)]
    assert "Removing disk spare_Disk1." in response.content.decode()


def test_post_without_csrf_token_is_forbidden(admin, floating):
    disk, vm = floating
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    for name, data in (("storage:disk_attach", {"vm": vm.pk}), ("storage:disk_remove", {})):
        response = client.post(reverse(name, args=[disk.pk]), data, headers=HX)
        assert response.status_code == 403
    disk.refresh_from_db()
    assert disk.status == DiskStatus.OK and not Job.objects.exists()


def test_remove_floating_disk_through_the_worker(admin_client, floating, sync_hosts, work):
    disk, vm = floating
    sync_hosts(vm.host)
    response = work(
        lambda: admin_client.post(reverse("storage:disk_remove", args=[disk.pk]), headers=HX)
    )
    assert_messages(response, "success", "Removing disk spare_Disk1.")
    assert not Disk.objects.filter(pk=disk.pk).exists()
    assert Job.objects.get().status == JobStatus.SUCCEEDED
    assert "spare_Disk1" not in admin_client.get(reverse("storage:disks")).content.decode()
