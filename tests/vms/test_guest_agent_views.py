"""The guest agent's data on the pages: the General sub-tab, the list's IP Addresses column,
the User Portal card, a snapshot's Installed Applications, and "no guest agent" when none
answers. Pages read the stored report only: no libvirt call on a page request."""

import pytest
from django.urls import reverse
from django.utils import timezone
from factories import VMFactory, grant
from helpers import HX, html_find, html_one, html_text

from vms.choices import VMStatus
from vms.guest_agent import snapshot_guest_record
from vms.models import GuestAgentReport, Snapshot

pytestmark = pytest.mark.django_db


def answering(vm, **fields) -> GuestAgentReport:
    values = {
        "answering": True,
        "ip_addresses": ["192.168.1.5", "fe80::1"],
        "fqdn": "web.example.org",
        "os_name": "Debian GNU/Linux 12 (bookworm)",
        "kernel": "6.1.0-28-amd64",
        "architecture": "x86_64",
        "timezone": "CET",
        "users": ["alice"],
        "reported_at": timezone.now(),
        **fields,
    }
    return GuestAgentReport.objects.create(vm=vm, **values)


def general(client, vm) -> dict[str, str]:
    response = client.get(reverse("vms:details", args=[vm.pk, "general"]), headers=HX)
    assert response.status_code == 200
    terms = html_find(response, "dl.props dt")
    return {html_text(dt): html_text(dt.getnext()) for dt in terms}


def test_general_sub_tab_shows_what_the_agent_reported(admin_client, monkeypatch):
    vm = VMFactory(status=VMStatus.UP)
    answering(vm)
    monkeypatch.setattr("hypervisor.connect", lambda *a, **k: pytest.fail("libvirt asked"))
    shown = general(admin_client, vm)
    assert shown["IP Addresses"] == "192.168.1.5, fe80::1"
    assert shown["FQDN"] == "web.example.org"
    assert shown["Operating System"] == "Debian GNU/Linux 12 (bookworm)"
    assert shown["Kernel"] == "6.1.0-28-amd64 (x86_64)"
    assert shown["Logged-in User(s)"] == "alice"
    assert shown["Time Zone"] == "CET"


@pytest.mark.parametrize("status, report", [(VMStatus.UP, False), (VMStatus.DOWN, True)])
def test_no_answering_agent_says_no_guest_agent_without_error(admin_client, status, report):
    vm = VMFactory(status=status)
    if report:  # what it reported while it ran: not shown once it is Down
        answering(vm)
    shown = general(admin_client, vm)
    for term in ("IP Addresses", "FQDN", "Operating System", "Kernel", "Logged-in User(s)"):
        assert shown[term] == "no guest agent"


def test_the_list_has_ip_addresses_and_fqdn_columns(admin_client):
    up = VMFactory(status=VMStatus.UP, name="web")
    answering(up, ip_addresses=["10.0.0.7"])
    VMFactory(status=VMStatus.UP, name="quiet")
    response = admin_client.get(reverse("vms:table"), headers=HX)
    headers = [html_text(th) for th in html_find(response, "#vm-table thead th")]
    assert "IP Addresses" in headers and "FQDN" in headers
    cells = {
        row.get("data-name"): html_text(html_one(row, "td.guest-ips"))
        for row in html_find(response, "tr.vm-row")
    }
    assert cells == {"web": "10.0.0.7", "quiet": ""}
    fqdns = {
        row.get("data-name"): html_text(html_one(row, "td.guest-fqdn"))
        for row in html_find(response, "tr.vm-row")
    }
    assert fqdns == {"web": "web.example.org", "quiet": ""}


def test_the_user_portal_card_shows_the_addresses(client, user):
    vm = VMFactory(status=VMStatus.UP)
    grant(user, "UserRole", vm)
    answering(vm, ip_addresses=["10.0.0.8"], fqdn="desk.example.org")
    quiet = VMFactory(status=VMStatus.UP)
    grant(user, "UserRole", quiet)
    client.force_login(user)
    response = client.get(reverse("user_portal"))
    assert html_text(html_one(response, f"#vm-card-{vm.pk} .guest-ips")) == (
        "IP Addresses: 10.0.0.8 · desk.example.org"
    )
    assert html_text(html_one(response, f"#vm-card-{quiet.pk} .guest-ips")) == "no guest agent"


def test_a_snapshot_keeps_what_the_agent_reported_and_says_applications_are_not_reported(
    admin_client,
):
    vm = VMFactory(status=VMStatus.UP)
    assert snapshot_guest_record(vm) == {}  # no agent answered
    answering(vm)
    record = snapshot_guest_record(vm)
    assert record["os_name"] == "Debian GNU/Linux 12 (bookworm)"
    assert record["applications"] is None
    taken = Snapshot.objects.create(vm=vm, memory_mb=1024, vcpus=1, guest_agent=record)
    bare = Snapshot.objects.create(vm=vm, memory_mb=1024, vcpus=1)
    url = reverse("vms:details", args=[vm.pk, "snapshots"])
    shown = admin_client.get(url, {"snapshot": taken.pk, "sub": "apps"}, headers=HX)
    body = html_text(html_one(shown, ".snapshot-details"))
    assert "Debian GNU/Linux 12 (bookworm)" in body
    assert "qemu-guest-agent has no command that lists them" in body
    none = admin_client.get(url, {"snapshot": bare.pk, "sub": "apps"}, headers=HX)
    assert "No guest agent answered when this snapshot was taken" in html_text(
        html_one(none, ".snapshot-details")
    )


def test_the_edit_window_says_plainly_what_single_sign_on_does(admin_client):
    vm = VMFactory()
    response = admin_client.get(reverse("vms:edit", args=[vm.pk]), headers=HX)
    hint = html_text(html_one(response, ".sso-hint"))
    assert "does not log anyone in to the guest" in hint
