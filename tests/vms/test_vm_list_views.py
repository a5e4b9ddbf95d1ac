"""Virtual Machines tab views: anonymous (login page), logged in without permission (empty
list / 404), an object that is not there (404), the permitted list and its toolbar data.
(Split out of test_vm_views.py; the action windows and the New VM, Hosts and Clusters views
are in test_vm_action_views.py and test_new_vm_host_cluster_views.py.)"""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from factories import (
    ClusterFactory,
    DiskFactory,
    HostFactory,
    VMFactory,
)
from helpers import HX, html_find
from vm_views_support import (
    EXPECTED_ACTIONS,
    MISSING,
    VM_LIST_QUERIES,
    S,
    action_url,
    names_in,
    row_actions,
)

from portal.kernel.models import Event, Job, JobStatus
from vms.actions import VM_STATUS_ACTIONS, VM_WINDOW_ACTIONS, allowed_actions
from vms.choices import VMStatus
from vms.models import VirtualMachine

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
    per_page = settings.VIREO_PAGE_SIZE
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
    assert 'href="?q=vm0&amp;sort=-name&amp;page=2"' in searched.content.decode()


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
        VM_STATUS_ACTIONS
    ) | set(VM_WINDOW_ACTIONS)  # and the Console, which opens a window of its own
    # The single row partial carries the same.
    vm = VirtualMachine.objects.get(name="vm-up")
    row = admin_client.get(reverse("vms:row", args=[vm.pk]), headers=HX)
    assert row_actions(row) == {"vm-up": EXPECTED_ACTIONS[S.UP]}
