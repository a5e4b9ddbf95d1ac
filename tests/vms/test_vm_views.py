"""Views of the Virtual Machines, Hosts and Clusters tabs, each tried four ways: anonymous
(login page), logged in without permission (empty list / 404), permitted (the content), and
an object that is not there (404)."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from factories import (
    ClusterFactory,
    DiskFactory,
    HostFactory,
    StorageDomainFactory,
    SuperUserFactory,
    VMFactory,
)
from helpers import HX, GiB, assert_messages, html_find, html_one

from portal.models import Event, Job, JobStatus
from storage.choices import DiskStatus
from storage.models import Disk
from vms.choices import TRANSITIONS, HostStatus, VMStatus, allowed_actions
from vms.models import Cluster, Host, VirtualMachine

MISSING = 999_999_999
S = VMStatus

# Measured, the same for 5 and for 60 VMs: session, user, count, the page of VMs (host and
# cluster joined), the active jobs of the page, whether New VM is offered.
VM_LIST_QUERIES = 6


def names_in(response) -> list[str]:
    """The VM names of the results list's rows, top to bottom."""
    return [row.get("data-name") for row in html_find(response, "tr.vm-row[id^=vm-row-][data-vm]")]


def row_actions(response) -> dict[str, set[str]]:
    return {
        row.get("data-name"): set(row.get("data-actions").split())
        for row in html_find(response, "[data-name][data-actions]")
    }


def action_url(action: str, *vms) -> str:
    return reverse("vms:action", args=[action]) + "?" + "&".join(f"vm={vm.pk}" for vm in vms)


# ---- Anonymous: every URL sends the browser to the login page --------------------------

ANONYMOUS_URLS = [
    ("get", "vms:list", [], {}),
    ("get", "vms:list", [], HX),
    ("get", "vms:table", [], HX),
    ("get", "vms:new", [], HX),
    ("post", "vms:new", [], HX),
    ("get", "vms:action", ["shutdown"], HX),
    ("post", "vms:action", ["shutdown"], HX),
    ("post", "vms:action", ["clone"], HX),
    ("get", "vms:detail", [1], {}),
    ("get", "vms:row", [1], HX),
    ("get", "vms:details", [1, "general"], HX),
    ("get", "vms:hosts", [], {}),
    ("get", "vms:host_new", [], HX),
    ("post", "vms:host_new", [], HX),
    ("get", "vms:clusters", [], {}),
    ("get", "vms:cluster_edit", [1], HX),
    ("post", "vms:cluster_edit", [1], HX),
]


@pytest.mark.django_db
@pytest.mark.parametrize("method,name,args,headers", ANONYMOUS_URLS)
def test_anonymous_is_sent_to_login(client, method, name, args, headers):
    url = reverse(name, args=args)
    response = getattr(client, method)(url + "?vm=1", headers=headers)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")
    assert not Job.objects.exists()


# ---- Logged in without permission: empty lists, 404 for every object --------------------


def test_no_permission_sees_empty_lists(user_client):
    vm = VMFactory(name="hidden-vm")
    for response in (
        user_client.get(reverse("vms:list")),
        user_client.get(reverse("vms:list"), headers=HX),
        user_client.get(reverse("vms:table"), headers=HX),
        user_client.get(reverse("vms:list"), {"q": "hidden"}),
    ):
        assert response.status_code == 200
        assert "hidden-vm" not in response.content.decode()
        assert names_in(response) == []
    page = user_client.get(reverse("vms:list")).content.decode()
    assert "No virtual machines to show." in page
    assert reverse("vms:new") not in page  # no New VM button
    hosts = user_client.get(reverse("vms:hosts")).content.decode()
    assert vm.host.name not in hosts and "No hosts." in hosts
    assert reverse("vms:host_new") not in hosts
    clusters = user_client.get(reverse("vms:clusters")).content.decode()
    assert vm.cluster.name not in clusters and "No clusters." in clusters


def test_no_permission_gets_404_for_objects_and_actions(user_client):
    vm = VMFactory(status=S.UP)
    down = VMFactory()
    urls = [
        ("get", reverse("vms:detail", args=[vm.pk]), {}),
        ("get", reverse("vms:detail", args=[vm.pk]), HX),
        ("get", reverse("vms:row", args=[vm.pk]), HX),
        ("get", reverse("vms:details", args=[vm.pk, "general"]), HX),
        ("get", reverse("vms:details", args=[vm.pk, "disks"]), HX),
        ("get", reverse("vms:new"), HX),
        ("post", reverse("vms:new"), HX),
        ("get", reverse("vms:host_new"), HX),
        ("post", reverse("vms:host_new"), HX),
        ("get", reverse("vms:cluster_edit", args=[vm.cluster_id]), HX),
        ("post", reverse("vms:cluster_edit", args=[vm.cluster_id]), HX),
    ]
    for action in ("shutdown", "poweroff", "suspend", "reboot"):
        urls.append(("get", action_url(action, vm), HX))
        urls.append(("post", action_url(action, vm), HX))
    for action in ("run", "remove", "clone"):
        urls.append(("get", action_url(action, down), HX))
        urls.append(("post", action_url(action, down), HX))
    for method, url, headers in urls:
        response = getattr(user_client, method)(url, headers=headers)
        assert response.status_code == 404, (method, url)
    # ?selected= of a VM out of reach opens no details pane.
    response = user_client.get(reverse("vms:list"), {"selected": vm.pk})
    assert response.status_code == 200 and 'id="vm-details"' not in response.content.decode()
    assert not Job.objects.exists()
    assert VirtualMachine.objects.count() == 2
    vm.refresh_from_db()
    assert vm.status == S.UP


# ---- Objects that are not there: 404 ------------------------------------------------------


def test_missing_objects_are_404(admin_client):
    vm = VMFactory()
    for url in (
        reverse("vms:detail", args=[MISSING]),
        reverse("vms:row", args=[MISSING]),
        reverse("vms:details", args=[MISSING, "general"]),
        reverse("vms:details", args=[vm.pk, "nosuchtab"]),
        reverse("vms:cluster_edit", args=[MISSING]),
        reverse("vms:action", args=["shutdown"]) + f"?vm={MISSING}",
        reverse("vms:action", args=["clone"]) + f"?vm={MISSING}",
        reverse("vms:action", args=["run"]) + f"?vm={vm.pk}&vm={MISSING}",
        reverse("vms:action", args=["run"]) + "?vm=abc",
        reverse("vms:action", args=["run"]),  # no VM chosen
        reverse("vms:action", args=["explode"]) + f"?vm={vm.pk}",
    ):
        assert admin_client.get(url, headers=HX).status_code == 404, url
        assert admin_client.post(url, headers=HX).status_code == 404, url
    assert not Job.objects.exists()


def test_missing_selected_vm_shows_list_without_details(admin_client):
    VMFactory(name="alpha")
    for selected in (MISSING, "abc"):
        response = admin_client.get(reverse("vms:list"), {"selected": selected})
        assert response.status_code == 200
        assert names_in(response) == ["alpha"]
        assert 'id="vm-details"' not in response.content.decode()


# ---- Permitted: the Virtual Machines list ----------------------------------------------


def test_vm_list_page_and_partials(admin_client):
    vm = VMFactory(name="web1", memory_mb=2048, vcpus=2)
    page = admin_client.get(reverse("vms:list"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html and 'id="vm-toolbar"' in html
    assert names_in(page) == ["web1"]
    assert "2048 MB" in html and vm.host.name in html and vm.cluster.name in html
    assert reverse("vms:new") in html  # New VM button
    # htmx asks the list URL or table/ for the results list alone.
    for response in (
        admin_client.get(reverse("vms:list"), headers=HX),
        admin_client.get(reverse("vms:table"), headers=HX),
    ):
        assert response.status_code == 200
        partial = response.content.decode()
        assert partial.startswith('<div id="vm-results"') and "<html" not in partial
        assert names_in(response) == ["web1"]


def test_vm_detail_row_and_details_pane(admin_client):
    vm = VMFactory(name="db1", description="the database")
    disk = DiskFactory(vm=vm, alias="db1_Disk1")
    Event.objects.create(
        action="run",
        phase="requested",
        object_type="vm",
        object_name="db1",
        vm=vm,
        message="admin asked to run VM db1.",
    )
    page = admin_client.get(reverse("vms:detail", args=[vm.pk]))
    assert page.status_code == 200
    assert names_in(page) == ["db1"]
    assert 'id="vm-details"' in page.content.decode() and "the database" in page.content.decode()
    selected = admin_client.get(reverse("vms:list"), {"selected": vm.pk})
    assert 'id="vm-details"' in selected.content.decode()
    pane = admin_client.get(reverse("vms:detail", args=[vm.pk]), headers=HX).content.decode()
    assert pane.startswith('<div id="vm-details"') and "the database" in pane
    row = admin_client.get(reverse("vms:row", args=[vm.pk]), headers=HX).content.decode()
    assert row.startswith(f'<tr id="vm-row-{vm.pk}"') and "db1" in row
    general = admin_client.get(reverse("vms:details", args=[vm.pk, "general"]), headers=HX)
    assert str(vm.uuid) in general.content.decode()
    disks = admin_client.get(reverse("vms:details", args=[vm.pk, "disks"]), headers=HX)
    assert (
        disk.alias in disks.content.decode() and disk.storage_domain.name in disks.content.decode()
    )
    events = admin_client.get(reverse("vms:details", args=[vm.pk, "events"]), headers=HX)
    assert "admin asked to run VM db1." in events.content.decode()


def test_vm_list_search_by_name(admin_client):
    for name in ("web1", "web2", "db1", "WEBX"):
        VMFactory(name=name)
    response = admin_client.get(reverse("vms:table"), {"q": "web"}, headers=HX)
    assert names_in(response) == ["WEBX", "web1", "web2"]
    response = admin_client.get(reverse("vms:list"), {"q": " db "})
    assert names_in(response) == ["db1"]
    response = admin_client.get(reverse("vms:table"), {"q": "nothing"}, headers=HX)
    assert names_in(response) == []
    assert "No virtual machine matches “nothing”." in response.content.decode()


def _sortable_vms():
    """Three VMs whose order differs from column to column."""
    now = timezone.now()
    specs = [
        # name, status, host, cluster, memory, cpus, started minutes ago
        ("b-vm", S.UP, "h-c", "c-a", 4096, 1, 5),
        ("c-vm", S.DOWN, "h-a", "c-b", 1024, 4, None),
        ("a-vm", S.POWERING_DOWN, "h-b", "c-c", 2048, 2, 60),
    ]
    for name, status, host, cluster, memory, cpus, minutes in specs:
        VMFactory(
            name=name,
            status=status,
            host=HostFactory(name=host, cluster=ClusterFactory(name=cluster)),
            memory_mb=memory,
            vcpus=cpus,
            started_at=now - timedelta(minutes=minutes) if minutes is not None else None,
        )


@pytest.mark.parametrize(
    "sort,expected",
    [
        ("name", ["a-vm", "b-vm", "c-vm"]),
        ("status", ["c-vm", "a-vm", "b-vm"]),  # down < powering_down < up
        ("host", ["c-vm", "a-vm", "b-vm"]),
        ("cluster", ["b-vm", "c-vm", "a-vm"]),
        ("memory", ["c-vm", "a-vm", "b-vm"]),
        ("cpus", ["b-vm", "a-vm", "c-vm"]),
        # Uptime ascending: no uptime first, then the shortest.
        ("uptime", ["c-vm", "b-vm", "a-vm"]),
    ],
)
def test_vm_list_sorts_by_each_column(admin_client, sort, expected):
    _sortable_vms()
    response = admin_client.get(reverse("vms:table"), {"sort": sort}, headers=HX)
    assert names_in(response) == expected
    html = response.content.decode()
    # The header shows the direction and its link flips it.
    assert f"sort=-{sort}" in html
    descending = admin_client.get(reverse("vms:table"), {"sort": f"-{sort}"}, headers=HX)
    assert names_in(descending) == expected[::-1]
    assert html_find(descending, ".sortable.desc")
    page = admin_client.get(reverse("vms:list"), {"sort": f"-{sort}"})
    assert names_in(page) == expected[::-1]


def test_vm_list_unknown_sort_falls_back_to_name(admin_client):
    _sortable_vms()
    for sort in ("bogus", "-bogus", "host__uri", ""):
        response = admin_client.get(reverse("vms:table"), {"sort": sort}, headers=HX)
        assert response.status_code == 200
        assert names_in(response) == ["a-vm", "b-vm", "c-vm"]


def test_vm_list_pagination(admin_client, settings):
    per_page = settings.VIREO_VMS_PER_PAGE
    host = HostFactory()
    total = per_page + 10
    VirtualMachine.objects.bulk_create(
        VirtualMachine(name=f"vm{i:03d}", host=host, cluster=host.cluster, memory_mb=512, vcpus=1)
        for i in range(total)
    )
    first = admin_client.get(reverse("vms:list"))
    assert names_in(first) == [f"vm{i:03d}" for i in range(per_page)]
    assert f"1–{per_page} of {total}" in first.content.decode()
    assert "page=2" in first.content.decode() and "Previous" not in first.content.decode()
    second = admin_client.get(reverse("vms:table"), {"page": 2}, headers=HX)
    assert names_in(second) == [f"vm{i:03d}" for i in range(per_page, total)]
    assert f"{per_page + 1}–{total} of {total}" in second.content.decode()
    assert "Next" not in second.content.decode()
    # Past the end shows the last page; nonsense shows the first.
    assert names_in(admin_client.get(reverse("vms:table"), {"page": 99}))[0] == f"vm{per_page:03d}"
    assert names_in(admin_client.get(reverse("vms:table"), {"page": "x"}))[0] == "vm000"
    # Search and sort ride along on the paging links.
    searched = admin_client.get(reverse("vms:table"), {"q": "vm0", "sort": "-name"})
    assert names_in(searched)[0] == f"vm{total - 1:03d}"
    assert 'href="?q=vm0&sort=-name&page=2"' in searched.content.decode()


def _many_vms(n: int, host) -> list[VirtualMachine]:
    statuses = [S.UP, S.DOWN, S.POWERING_UP, S.SUSPENDED, S.IMAGE_LOCKED]
    vms = VirtualMachine.objects.bulk_create(
        VirtualMachine(
            name=f"q{i:03d}",
            host=host,
            cluster=host.cluster,
            status=statuses[i % len(statuses)],
            memory_mb=1024,
            vcpus=1,
            started_at=timezone.now(),
        )
        for i in range(n)
    )
    # Run jobs on the rows that are Powering Up, and a clone that makes another row.
    for vm in (vm for vm in vms if vm.status == S.POWERING_UP):
        Job.objects.create(
            kind="vm_run",
            description=f"Run {vm.name}",
            vm=vm,
            status=JobStatus.RUNNING,
            progress=40,
        )
    Job.objects.create(kind="vm_clone", description="Clone", vm=vms[0], result_vm=vms[1])
    return vms


@pytest.mark.parametrize("n", [5, 60])
def test_vm_list_runs_constant_queries(admin_client, django_assert_max_num_queries, n):
    _many_vms(n, HostFactory())
    with django_assert_max_num_queries(VM_LIST_QUERIES):
        page = admin_client.get(reverse("vms:list"))
    assert len(names_in(page)) == min(n, 50)
    assert 'class="progress"' in page.content.decode()
    with django_assert_max_num_queries(VM_LIST_QUERIES):
        table = admin_client.get(reverse("vms:table"), {"sort": "-host"}, headers=HX)
    assert len(names_in(table)) == min(n, 50)
    with django_assert_max_num_queries(VM_LIST_QUERIES):
        admin_client.get(reverse("vms:list"), {"q": "q0", "page": 2}, headers=HX)


# ---- Toolbar and right-click data: the status table's actions --------------------------

EXPECTED_ACTIONS = {
    S.UP: {"shutdown", "poweroff", "suspend", "reboot"},
    S.DOWN: {"run", "remove", "clone"},
    S.SUSPENDED: {"run"},
    S.PAUSED: {"run", "shutdown", "poweroff"},
    S.POWERING_UP: {"poweroff"},
    S.POWERING_DOWN: {"poweroff"},
    S.REBOOT_IN_PROGRESS: {"shutdown", "poweroff"},
    S.NOT_RESPONDING: {"poweroff"},
    S.SAVING_STATE: set(),
    S.RESTORING_STATE: set(),
    S.IMAGE_LOCKED: set(),
    S.UNKNOWN: set(),
}


def test_rows_carry_the_actions_the_status_table_allows(admin_client):
    assert set(EXPECTED_ACTIONS) == set(VMStatus.values)
    host = HostFactory()
    for status in VMStatus.values:
        VMFactory(name=f"vm-{status}", status=status, host=host)
    actions = row_actions(admin_client.get(reverse("vms:list")))
    assert actions == {f"vm-{s}": EXPECTED_ACTIONS[s] for s in VMStatus.values}
    for status in VMStatus.values:
        assert actions[f"vm-{status}"] == set(allowed_actions(status))
    # Every toolbar button names an action of the table.
    html = admin_client.get(reverse("vms:list")).content.decode()
    assert {button.get("data-action") for button in html_find(html, "[data-action]")} == set(
        TRANSITIONS
    )
    # The single row partial carries the same.
    vm = VirtualMachine.objects.get(name="vm-up")
    row = admin_client.get(reverse("vms:row", args=[vm.pk]), headers=HX)
    assert row_actions(row) == {"vm-up": EXPECTED_ACTIONS[S.UP]}


# ---- Action windows (GET) ---------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_shutdown_window_reason_only_when_cluster_asks(admin_client, enabled):
    vm = VMFactory(
        name="web1",
        status=S.UP,
        host=HostFactory(cluster=ClusterFactory(shutdown_reason_enabled=enabled)),
    )
    response = admin_client.get(action_url("shutdown", vm), headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Shut down Virtual Machine(s)" in html
    assert "<li>web1</li>" in html and f'name="vm" value="{vm.pk}"' in html
    assert ('name="reason"' in html) is enabled
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "action,status,title",
    [
        ("reboot", S.UP, "Reboot Virtual Machine(s)"),
        ("poweroff", S.UP, "Power Off Virtual Machine(s)"),
        ("suspend", S.UP, "Suspend Virtual Machine(s)"),
        ("run", S.DOWN, "Run Virtual Machine(s)"),
        ("remove", S.DOWN, "Remove Virtual Machine(s)"),
        ("clone", S.DOWN, "Clone Virtual Machine"),
    ],
)
def test_action_windows(admin_client, action, status, title):
    vm = VMFactory(name="web1", status=status)
    response = admin_client.get(action_url(action, vm), headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert title in html
    assert 'name="reason"' not in html
    assert f'hx-post="{reverse("vms:action", args=[action])}"' in html
    assert not Job.objects.exists()
    vm.refresh_from_db()
    assert vm.status == status


def test_remove_window_has_remove_disks_checked(admin_client):
    vm = VMFactory()
    html = admin_client.get(action_url("remove", vm), headers=HX).content.decode()
    box = html_one(html, "input[type=checkbox][name=remove_disks]")
    assert box.get("checked") is not None
    assert (box.tail or "").strip().startswith("Remove Disk(s)")


def test_window_for_several_vms(admin_client):
    a, b = VMFactory(name="a1", status=S.UP), VMFactory(name="b1", status=S.UP)
    html = admin_client.get(action_url("reboot", a, b), headers=HX).content.decode()
    assert "<li>a1</li>" in html and "<li>b1</li>" in html


def test_clone_window_proposes_a_name(admin_client):
    vm = VMFactory(name="web1")
    html = admin_client.get(action_url("clone", vm), headers=HX).content.decode()
    assert 'name="clone_name" value="web1-clone"' in html


def test_clone_of_several_vms_is_a_bad_request(admin_client):
    a, b = VMFactory(), VMFactory()
    assert admin_client.get(action_url("clone", a, b), headers=HX).status_code == 400
    assert (
        admin_client.post(action_url("clone", a, b), {"clone_name": "x"}, headers=HX).status_code
        == 400
    )
    assert VirtualMachine.objects.count() == 2


def test_action_methods_other_than_get_and_post(admin_client):
    vm = VMFactory(status=S.UP)
    assert admin_client.put(action_url("shutdown", vm)).status_code == 405
    assert admin_client.delete(action_url("shutdown", vm)).status_code == 405


# ---- Action POSTs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "action,status,busy,kind",
    [
        ("run", S.DOWN, S.POWERING_UP, "vm_run"),
        ("run", S.SUSPENDED, S.RESTORING_STATE, "vm_run"),
        ("shutdown", S.UP, S.POWERING_DOWN, "vm_shutdown"),
        ("poweroff", S.UP, S.POWERING_DOWN, "vm_poweroff"),
        ("suspend", S.UP, S.SAVING_STATE, "vm_suspend"),
        ("reboot", S.UP, S.REBOOT_IN_PROGRESS, "vm_reboot"),
        ("remove", S.DOWN, S.IMAGE_LOCKED, "vm_remove"),
    ],
)
def test_action_post_moves_vm_to_busy_status(admin_client, admin, action, status, busy, kind):
    vm = VMFactory(name="web1", status=status)
    response = admin_client.post(action_url(action, vm), headers=HX)
    assert_messages(response, "success")
    assert "web1 requested." in response.content.decode()
    vm.refresh_from_db()
    assert vm.status == busy
    job = Job.objects.get()
    assert (job.kind, job.vm, job.user, job.status) == (kind, vm, admin, JobStatus.QUEUED)
    assert Event.objects.filter(vm=vm, action=action, phase="requested", user=admin).exists()


def test_action_post_without_htmx_redirects_with_message(admin_client):
    vm = VMFactory(name="web1", status=S.UP)
    response = admin_client.post(action_url("reboot", vm), follow=True)
    assert response.redirect_chain == [(reverse("vms:list"), 302)]
    assert "Reboot: web1 requested." in response.content.decode()
    vm.refresh_from_db()
    assert vm.status == S.REBOOT_IN_PROGRESS


@pytest.mark.parametrize(
    "action,status,busy",
    [
        ("run", S.DOWN, S.POWERING_UP),
        ("shutdown", S.UP, S.POWERING_DOWN),
        ("suspend", S.UP, S.SAVING_STATE),
        ("reboot", S.UP, S.REBOOT_IN_PROGRESS),
    ],
)
def test_action_on_several_vms(admin_client, action, status, busy):
    vms = [VMFactory(name=f"m{i}", status=status) for i in range(3)]
    response = admin_client.post(
        reverse("vms:action", args=[action]), {"vm": [vm.pk for vm in vms]}, headers=HX
    )
    assert_messages(response, "success")
    for vm in vms:
        assert f"{vm.name} requested." in response.content.decode()
        vm.refresh_from_db()
        assert vm.status == busy
    assert Job.objects.count() == 3


def test_shutdown_keeps_the_reason_when_the_cluster_asks(admin_client):
    asked = VMFactory(
        status=S.UP, host=HostFactory(cluster=ClusterFactory(shutdown_reason_enabled=True))
    )
    not_asked = VMFactory(status=S.UP)
    for vm in (asked, not_asked):
        admin_client.post(action_url("shutdown", vm), {"reason": "  kernel update "}, headers=HX)
    assert Job.objects.get(vm=asked).params["reason"] == "kernel update"
    assert Event.objects.get(vm=asked).reason == "kernel update"
    assert Job.objects.get(vm=not_asked).params["reason"] == ""


@pytest.mark.parametrize("checked,remove_disks", [({"remove_disks": "on"}, True), ({}, False)])
def test_remove_with_and_without_disks(admin_client, checked, remove_disks):
    vm = VMFactory()
    disk = DiskFactory(vm=vm)
    response = admin_client.post(action_url("remove", vm), checked, headers=HX)
    assert_messages(response, "success")
    assert Job.objects.get().params["remove_disks"] is remove_disks
    disk.refresh_from_db()
    assert disk.status == DiskStatus.LOCKED


def test_refused_action_answers_a_clear_message_and_changes_nothing(admin_client):
    vm = VMFactory(name="web1", status=S.DOWN)
    response = admin_client.post(action_url("suspend", vm), headers=HX)
    assert_messages(response, "error", "Cannot suspend web1: the VM is Down.")
    vm.refresh_from_db()
    assert vm.status == S.DOWN
    assert not Job.objects.exists() and not Event.objects.exists()


def test_second_admin_is_refused_after_the_first_moved_the_vm(admin_client):
    vm = VMFactory(name="web1", status=S.UP)
    other = Client()
    other.force_login(SuperUserFactory())
    assert_messages(admin_client.post(action_url("shutdown", vm), headers=HX), "success")
    response = other.post(action_url("poweroff", vm), headers=HX)
    assert response.status_code == 200
    assert_messages(response, "success")  # Power Off may interrupt a shutdown
    response = other.post(action_url("shutdown", vm), headers=HX)
    assert_messages(response, "error", "Cannot shut down web1: the VM is Powering Down.")
    assert Job.objects.count() == 2


def test_several_vms_one_refused(admin_client):
    up, down = VMFactory(name="up1", status=S.UP), VMFactory(name="down1", status=S.DOWN)
    response = admin_client.post(action_url("shutdown", up, down), headers=HX)
    assert_messages(response, "success", "Shutdown: up1 requested.")
    assert_messages(response, "error", "Cannot shut down down1: the VM is Down.")
    down.refresh_from_db()
    assert down.status == S.DOWN
    assert Job.objects.get().vm == up


def test_action_refused_when_host_not_up(admin_client):
    vm = VMFactory(name="web1", status=S.DOWN, host=HostFactory(status=HostStatus.NON_RESPONSIVE))
    response = admin_client.post(action_url("run", vm), headers=HX)
    assert "Cannot run web1: its host" in response.content.decode()
    vm.refresh_from_db()
    assert vm.status == S.DOWN and not Job.objects.exists()


def test_post_without_csrf_token_is_forbidden(admin):
    vm = VMFactory(status=S.UP)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    for url, data in (
        (action_url("shutdown", vm), {}),
        (action_url("clone", vm), {"clone_name": "x"}),
        (reverse("vms:new"), {}),
        (reverse("vms:host_new"), {}),
        (reverse("vms:cluster_edit", args=[vm.cluster_id]), {}),
    ):
        assert client.post(url, data, headers=HX).status_code == 403, url
    vm.refresh_from_db()
    assert vm.status == S.UP and not Job.objects.exists()


def test_post_with_csrf_token_from_the_page(admin):
    """The token rides on <body hx-headers>; htmx sends it as X-CSRFToken."""
    vm = VMFactory(status=S.UP)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    html = client.get(reverse("vms:list")).content.decode()
    token = re.search(r'"X-CSRFToken": "([^"]+)"', html).group(1)
    response = client.post(action_url("reboot", vm), headers={**HX, "X-CSRFToken": token})
    assert_messages(response, "success")


# ---- Clone VM -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "clone_name,error",
    [
        ("", "Clone Name is required."),
        ("   ", "Clone Name is required."),
        ("x" * 256, "Clone Name is too long: 256 characters, at most 255."),
        (
            "bad name!",
            "Clone Name may contain only letters, digits, &#x27;-&#x27;, &#x27;_&#x27; and &#x27;.&#x27;.",
        ),
        (
            "taken",
            "Clone Name &#x27;taken&#x27; is already used by another virtual machine in this data center.",
        ),
        (
            "web1",
            "Clone Name &#x27;web1&#x27; is already used by another virtual machine in this data center.",
        ),
        ("x" * 1001, "at most 1000 characters"),
    ],
)
def test_clone_bad_name_returns_the_window_with_the_error(admin_client, clone_name, error):
    vm = VMFactory(name="web1")
    VMFactory(
        name="taken", host=HostFactory(cluster=ClusterFactory(data_center=vm.cluster.data_center))
    )
    response = admin_client.post(action_url("clone", vm), {"clone_name": clone_name}, headers=HX)
    assert response.status_code == 200
    assert "HX-Retarget" not in response
    html = response.content.decode()
    assert "Clone Virtual Machine" in html and error in html
    assert VirtualMachine.objects.count() == 2
    vm.refresh_from_db()
    assert vm.status == S.DOWN and not Job.objects.exists()


def test_clone_name_may_repeat_in_another_data_center(admin_client):
    vm = VMFactory(name="web1")
    VMFactory(name="web1-copy")  # its own data center
    response = admin_client.post(action_url("clone", vm), {"clone_name": "web1-copy"}, headers=HX)
    assert_messages(response, "success", "Cloning web1 to web1-copy.")


def test_clone_good_name_creates_an_image_locked_clone(admin_client, admin):
    vm = VMFactory(name="web1", memory_mb=2048, vcpus=2)
    response = admin_client.post(
        action_url("clone", vm), {"clone_name": " web1.copy_2 "}, headers=HX
    )
    assert_messages(response, "success", "Cloning web1 to web1.copy_2.")
    clone = VirtualMachine.objects.get(name="web1.copy_2")
    assert clone.status == S.IMAGE_LOCKED
    assert (clone.cluster, clone.memory_mb, clone.vcpus, clone.created_by) == (
        vm.cluster,
        2048,
        2,
        admin,
    )
    vm.refresh_from_db()
    assert vm.status == S.IMAGE_LOCKED
    job = Job.objects.get()
    assert (job.kind, job.vm, job.result_vm) == ("vm_clone", vm, clone)
    # Both rows show the clone job's progress.
    html = admin_client.get(reverse("vms:list")).content.decode()
    assert html.count('title="Clone VM web1') == 2


def test_clone_of_a_running_vm_is_refused(admin_client):
    vm = VMFactory(name="web1", status=S.UP)
    response = admin_client.post(action_url("clone", vm), {"clone_name": "web2"}, headers=HX)
    assert response.status_code == 200
    assert "Cannot clone web1: the VM is Up." in response.content.decode()
    assert not VirtualMachine.objects.filter(name="web2").exists()
    assert not Job.objects.exists()


# ---- New VM -------------------------------------------------------------------------------


@pytest.fixture
def place():
    """A cluster with an Up host and a data storage domain in its data center."""
    host = HostFactory(name="node1")
    domain = StorageDomainFactory(name="data1", data_center=host.cluster.data_center)
    return host.cluster, domain


def new_vm_data(cluster, domain, **overrides):
    data = {
        "name": "new1",
        "description": "",
        "cluster": cluster.pk,
        "memory_mb": 1024,
        "vcpus": 2,
        "disk_size_gb": 10,
        "storage_domain": domain.pk,
        "allocation": "thin",
    }
    data.update(overrides)
    return data


def test_new_vm_window(admin_client, place):
    cluster, domain = place
    response = admin_client.get(reverse("vms:new"), headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "New Virtual Machine" in html and cluster.name in html and domain.name in html


@pytest.mark.parametrize(
    "field,value,error",
    [
        ("memory_mb", 10, "Memory must be between 64 and 4,194,304 MB."),
        ("memory_mb", 5 * 1024 * 1024, "Memory must be between 64 and 4,194,304 MB."),
        ("vcpus", 0, "vCPUs must be between 1 and 256."),
        ("vcpus", 257, "vCPUs must be between 1 and 256."),
        ("name", "bad name", "Name may contain only letters"),
        ("memory_mb", "lots", "Enter a whole number."),
        ("disk_size_gb", 0, "Ensure this value is greater than or equal to 1."),
    ],
)
def test_new_vm_out_of_range_shows_error(admin_client, place, field, value, error):
    cluster, domain = place
    response = admin_client.post(
        reverse("vms:new"), new_vm_data(cluster, domain, **{field: value}), headers=HX
    )
    assert response.status_code == 200
    assert "HX-Retarget" not in response
    html = response.content.decode()
    assert "New Virtual Machine" in html and error in html
    assert not VirtualMachine.objects.exists() and not Job.objects.exists()


def test_new_vm_without_an_up_host_is_refused(admin_client, place):
    cluster, domain = place
    Host.objects.update(status=HostStatus.NON_RESPONSIVE)
    response = admin_client.post(reverse("vms:new"), new_vm_data(cluster, domain), headers=HX)
    assert f"No host in cluster {cluster.name} is Up" in response.content.decode()
    assert not VirtualMachine.objects.exists()


def test_new_vm_creates_image_locked_vm_with_locked_disk(admin_client, admin, place):
    cluster, domain = place
    response = admin_client.post(
        reverse("vms:new"), new_vm_data(cluster, domain, disk_size_gb=3), headers=HX
    )
    assert_messages(response, "success", "Creating VM new1.")
    vm = VirtualMachine.objects.get(name="new1")
    assert vm.status == S.IMAGE_LOCKED
    assert (vm.cluster, vm.host.name, vm.memory_mb, vm.vcpus) == (cluster, "node1", 1024, 2)
    disk = Disk.objects.get(vm=vm)
    assert (disk.status, disk.size_bytes, disk.storage_domain, disk.sparse) == (
        DiskStatus.LOCKED,
        3 * GiB,
        domain,
        True,
    )
    job = Job.objects.get()
    assert (job.kind, job.vm, job.user) == ("vm_create", vm, admin)


# ---- Hosts ---------------------------------------------------------------------------------


def test_host_list(admin_client):
    host = HostFactory(name="node7", status=HostStatus.UP)
    for response in (
        admin_client.get(reverse("vms:hosts")),
        admin_client.get(reverse("vms:hosts"), headers=HX),
    ):
        assert response.status_code == 200
        html = response.content.decode()
        assert "node7" in html and host.uri in html and host.cluster.name in html
    assert reverse("vms:host_new") in admin_client.get(reverse("vms:hosts")).content.decode()
    assert (
        admin_client.get(reverse("vms:hosts"), headers=HX)
        .content.decode()
        .startswith('<div id="host-results"')
    )


@pytest.mark.parametrize(
    "name,uri,error",
    [
        ("node2", "not a uri", "Give a libvirt URI such as qemu:///system"),
        ("node2", "http//x", "Give a libvirt URI such as qemu:///system"),
        ("bad name", "qemu+ssh://root@n2/system", "Host name is required"),
        ("node1", "qemu+ssh://root@n2/system", "A host with that name or URI already exists."),
        ("node2", "qemu+ssh://root@n1/system", "A host with that name or URI already exists."),
        ("", "qemu+ssh://root@n2/system", "This field is required."),
    ],
)
def test_new_host_errors(admin_client, name, uri, error):
    cluster = ClusterFactory()
    HostFactory(name="node1", uri="qemu+ssh://root@n1/system", cluster=cluster)
    response = admin_client.post(
        reverse("vms:host_new"), {"name": name, "uri": uri, "cluster": cluster.pk}, headers=HX
    )
    assert response.status_code == 200
    assert "HX-Retarget" not in response
    assert "New Host" in response.content.decode() and error in response.content.decode()
    assert Host.objects.count() == 1


def test_new_host_creates_a_connecting_host(admin_client):
    cluster = ClusterFactory()
    assert "New Host" in admin_client.get(reverse("vms:host_new"), headers=HX).content.decode()
    response = admin_client.post(
        reverse("vms:host_new"),
        {"name": "node9", "uri": "qemu+ssh://root@n9/system", "cluster": cluster.pk},
        headers=HX,
    )
    assert_messages(response, "success", "Host node9 added; connecting.")
    host = Host.objects.get(name="node9")
    assert (host.status, host.uri, host.cluster) == (
        HostStatus.CONNECTING,
        "qemu+ssh://root@n9/system",
        cluster,
    )
    assert Event.objects.filter(host=host, action="add_host").exists()


# ---- Clusters ------------------------------------------------------------------------------


def test_cluster_list(admin_client):
    cluster = ClusterFactory(name="prod", shutdown_reason_enabled=True, shutdown_timeout=90)
    for response in (
        admin_client.get(reverse("vms:clusters")),
        admin_client.get(reverse("vms:clusters"), headers=HX),
    ):
        html = response.content.decode()
        assert (
            "prod" in html
            and cluster.data_center.name in html
            and "Enabled" in html
            and "90 s" in html
        )
        assert reverse("vms:cluster_edit", args=[cluster.pk]) in html


def test_cluster_edit_window_toggles_reason_and_timeout(admin_client):
    cluster = ClusterFactory(name="prod", shutdown_timeout=120)
    window = admin_client.get(reverse("vms:cluster_edit", args=[cluster.pk]), headers=HX)
    assert window.status_code == 200
    assert (
        "Edit Cluster: prod" in window.content.decode() and 'value="120"' in window.content.decode()
    )
    response = admin_client.post(
        reverse("vms:cluster_edit", args=[cluster.pk]),
        {"description": "d", "shutdown_reason_enabled": "on", "shutdown_timeout": 30},
        headers=HX,
    )
    assert_messages(response, "success", "Cluster prod saved.")
    cluster.refresh_from_db()
    assert (cluster.shutdown_reason_enabled, cluster.shutdown_timeout, cluster.description) == (
        True,
        30,
        "d",
    )
    # And back off (an unchecked box is absent from the POST).
    admin_client.post(
        reverse("vms:cluster_edit", args=[cluster.pk]), {"shutdown_timeout": 60}, headers=HX
    )
    cluster.refresh_from_db()
    assert (cluster.shutdown_reason_enabled, cluster.shutdown_timeout) == (False, 60)


@pytest.mark.parametrize(
    "timeout,error",
    [
        (2, "Graceful shutdown timeout must be between 5 and 3,600 seconds."),
        (4000, "Graceful shutdown timeout must be between 5 and 3,600 seconds."),
        (-1, "Graceful shutdown timeout must be between 5 and 3,600 seconds."),
        ("soon", "Enter a whole number."),
        ("", "This field is required."),
    ],
)
def test_cluster_edit_bad_timeout_shows_error(admin_client, timeout, error):
    cluster = ClusterFactory(name="prod", shutdown_timeout=120)
    response = admin_client.post(
        reverse("vms:cluster_edit", args=[cluster.pk]),
        {"shutdown_reason_enabled": "on", "shutdown_timeout": timeout},
        headers=HX,
    )
    assert response.status_code == 200
    assert "HX-Retarget" not in response
    assert error in response.content.decode()
    cluster.refresh_from_db()
    assert (cluster.shutdown_reason_enabled, cluster.shutdown_timeout) == (False, 120)
    assert Cluster.objects.count() == 1


# ---- End to end through a real worker -------------------------------------------------------


def test_run_then_shutdown_through_the_worker(admin_client, sync_hosts, work):
    vm = VMFactory(name="e2e", status=S.DOWN)
    DiskFactory(vm=vm)
    sync_hosts(vm.host)
    response = work(lambda: admin_client.post(action_url("run", vm), headers=HX))
    assert_messages(response, "success", "Run: e2e requested.")
    vm.refresh_from_db()
    assert vm.status == S.UP and vm.started_at is not None, list(
        Job.objects.values("status", "error", "rq_id")
    )
    assert row_actions(admin_client.get(reverse("vms:list")))["e2e"] == EXPECTED_ACTIONS[S.UP]
    work(lambda: admin_client.post(action_url("shutdown", vm), headers=HX))
    vm.refresh_from_db()
    assert vm.status == S.DOWN, list(Job.objects.values("kind", "status", "error"))
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
