"""Small UI defects found by trying the portal: each window shows all its field errors at
once, the Hosts tab names each host, the User Portal has no lone separator, the pages use
the administrator's words, events carry severity icons, the sort survives a reload, Enter in
Add Permission's search searches, and a removed VM's row and pane are told it is gone."""

import pytest
from django.urls import reverse
from factories import (
    ClusterFactory,
    HostFactory,
    StorageDomainFactory,
    SuperUserFactory,
    UserFactory,
    VMFactory,
    grant,
)
from helpers import HX, html_find, html_one

from accounts.models import Role, System
from portal.kernel.models import Event, Phase, Severity
from vms.models import Host, VirtualMachine


def errors(response) -> list[str]:
    return [error.text for error in html_find(response, "span.error") if error.text]


def test_new_vm_window_shows_every_field_error_at_once(admin_client):
    host = HostFactory(name="node1")
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    data = {
        "name": "bad name!",
        "cluster": host.cluster.pk,
        "memory_mb": 1,
        "vcpus": 0,
        "disk_size_gb": 0,
        "storage_domain": domain.pk,
        "allocation": "thin",
    }
    response = admin_client.post(reverse("vms:new"), data, headers=HX)
    assert response.status_code == 200
    found = " | ".join(errors(response)).replace("&#x27;", "'")
    for message in (
        "Name may contain only letters",
        "Memory must be between 64 and 4,194,304 MB.",
        "vCPUs must be between 1 and 256.",
        "greater than or equal to 1",
    ):
        assert message in found, found
    assert not VirtualMachine.objects.exists()
    # The browser does not stop at its own first complaint (min="64" on the input): windows
    # leave validation to the server, which reports every field.
    window = admin_client.get(reverse("vms:new"), headers=HX).content.decode()
    assert window.startswith('<form class="dialog" novalidate')


def test_edit_vm_window_shows_every_field_error_at_once(admin_client):
    vm = VMFactory()
    data = {"description": "x" * 1001, "memory_mb": 10, "vcpus": 1000}
    response = admin_client.post(reverse("vms:edit", args=[vm.pk]), data, headers=HX)
    found = " | ".join(errors(response))
    assert "Memory must be between" in found and "vCPUs must be between" in found, found
    assert "at most 1000 characters" in found, found


def test_role_window_shows_every_field_error_at_once(admin_client):
    data = {"name": "has space", "description": "", "account_type": "", "actions": []}
    response = admin_client.post(reverse("role_new"), data, headers=HX)
    found = " | ".join(errors(response))
    assert "Role name is required" in found, found
    assert "Tick at least one action permission." in found, found
    assert "This field is required." in found, found  # Account Type
    assert not Role.objects.filter(builtin=False).exists()


def test_new_host_window_shows_every_field_error_at_once(admin_client):
    response = admin_client.post(
        reverse("vms:host_new"), {"name": "bad name", "uri": "", "cluster": ""}, headers=HX
    )
    found = " | ".join(errors(response))
    assert found.count("Host name is required") == 1 and found.count("required") >= 3, found
    assert not Host.objects.exists()


def test_hosts_tab_shows_each_hosts_own_name_and_address(admin_client):
    """Test hosts all report the portal machine's host name; the column shows each host's
    address instead (its host part), and a test host none."""
    cluster = ClusterFactory()
    remote = Host.objects.create(
        name="r1", cluster=cluster, uri="qemu+ssh://root@kvm1.example.com/system", hostname="vm"
    )
    local = Host.objects.create(name="l1", cluster=cluster, uri="qemu:///system", hostname="hv9")
    test = HostFactory(name="t1", cluster=cluster, hostname="vm")
    html = admin_client.get(reverse("vms:hosts")).content.decode()

    def cell(host):
        return html_one(html, f"tr#host-{host.pk} > td.hostname").text or ""

    assert (cell(remote), cell(local), cell(test)) == ("kvm1.example.com", "hv9", "—")
    assert "Hostname/IP" in html and "Address" in html
    assert "libvirt URI" not in html and "Host Name" not in html


def test_user_portal_has_no_lone_separator(client, db):
    user = UserFactory()
    grant(user, "UserRole", VMFactory())
    client.force_login(user)
    html = client.get(reverse("user_portal")).content.decode()
    toolbar = html.split('<div class="toolbar">', 1)[1].split("</div>", 1)[0]
    assert 'class="sep"' not in toolbar
    admin = SuperUserFactory()
    client.force_login(admin)
    toolbar = client.get(reverse("user_portal")).content.decode().split('<div class="toolbar">')[1]
    assert 'class="sep"' in toolbar.split("</div>", 1)[0]  # New VM and the portal follow it


def test_administrator_words_not_engineering_words(admin_client):
    HostFactory()
    StorageDomainFactory()
    Event.objects.create(
        action="host_status",
        phase=Phase.DETECTED,
        object_type="host",
        object_name="h",
        message="Host h is Non Responsive.",
        severity=Severity.ERROR,
        error="connection refused",
    )
    pages = [
        admin_client.get(reverse("vms:hosts")),
        admin_client.get(reverse("vms:host_new"), headers=HX),
        admin_client.get(reverse("storage:domains")),
        admin_client.get(reverse("events")),
    ]
    for response in pages:
        html = response.content.decode()
        for word in ("libvirt URI", "libvirt pool", "Phase", "detected", "Hypervisor error", "URI"):
            assert word not in html, (response.request["PATH_INFO"], word)
    assert "Address" in pages[1].content.decode()
    events = pages[3].content.decode()
    assert "Details: connection refused" in events


def test_events_carry_severity_icons_and_errors_stand_out(admin_client):
    for severity, message in [
        (Severity.NORMAL, "fine"),
        (Severity.WARNING, "careful"),
        (Severity.ERROR, "broken"),
    ]:
        Event.objects.create(
            action="x",
            phase=Phase.SUCCEEDED,
            object_type="vm",
            object_name="v",
            message=message,
            severity=severity,
        )
    html = admin_client.get(reverse("events")).content.decode()
    for severity, label in (("normal", "Normal"), ("warning", "Warning"), ("error", "Error")):
        icon = html_one(html, f"tr.event.sev-{severity} > td.sev > span.sev-icon.sev-{severity}")
        assert (icon.get("title"), icon.get("role"), icon.get("aria-label")) == (
            label,
            "img",
            label,
        )
    css = open("static/vireo.css").read()
    assert "tr.event.sev-error td" in css and ".sev-icon.sev-error" in css


@pytest.mark.parametrize("sort", ["-memory", "cluster", "-uptime"])
def test_sort_links_keep_the_sort_for_a_reload(admin_client, sort):
    """The table says the sort it shows in its own refresh URL and the search form's sort;
    the page read from the address (a reload) shows the same sort."""
    VMFactory(name="a", memory_mb=512)
    VMFactory(name="b", memory_mb=4096)
    table = admin_client.get(reverse("vms:table"), {"sort": sort}, headers=HX)
    assert table["HX-Replace-Url"] == f"/vms/?sort={sort}"
    html = admin_client.get(table["HX-Replace-Url"]).content.decode()
    assert f'id="vm-search-sort" name="sort" value="{sort}"' in html
    assert f"sort={sort}&amp;page=1" in html or f"sort={sort}&page=1" in html
    if sort == "-memory":
        assert html.index('data-name="b"') < html.index('data-name="a"')


def test_add_permission_search_box_searches_on_enter(admin_client):
    """Enter in the search box clicks Go (static/vireo.js: data-enter-clicks), never OK."""
    html = admin_client.get(
        reverse("permission_add", args=["system", System.get().pk]), headers=HX
    ).content.decode()
    assert 'name="q"' in html and 'data-enter-clicks="go"' in html
    go = html_one(html, "button[data-enter-target=go]")
    assert go.get("type") == "button" and go.get("hx-get")
    js = open("static/vireo.js").read()
    assert "data-enter-clicks" in js and "preventDefault" in js


def test_removing_a_vm_tells_pages_it_is_gone(
    admin, sync_hosts, work, monkeypatch, django_capture_on_commit_callbacks
):
    """The remove job's live message for the VM says "gone": the page takes the row and pane
    off instead of asking for them (which answered 404)."""
    from portal.kernel import live
    from vms import services
    from vms.choices import VMStatus

    sent = []
    monkeypatch.setattr(live, "send_now", lambda *t, **kw: sent.append((t, kw)))
    vm = VMFactory(status=VMStatus.DOWN)
    sync_hosts(vm.host)
    with django_capture_on_commit_callbacks(execute=True):  # the job's own broadcasts too
        work(lambda: services.vm_remove(vm_id=vm.pk, user=admin, remove_disks=True))
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert ((f"vm.{vm.pk}",), {"gone": True}) in sent
    js = open("static/vireo.js").read()
    assert "msg.gone" in js
