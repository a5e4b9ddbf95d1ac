"""Consoles on libvirt's test driver (issue 10, part 3): opening one sets a graphics password
with an expiry and a one-time ticket; the ticket is used once; one user at a time holds a
console unless an administrator takes it over; the Console Disconnect Action; the console
window, its .vv file and who may open them. The real VNC port behind the websocket is proven
on qemu in tests/integration/test_console_qemu.py."""

import xml.etree.ElementTree as ET
from datetime import UTC, timedelta

import libvirt
import pytest
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from django.utils import timezone
from factories import UserFactory, grant
from helpers import html_one

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job
from portal.shell.console_consumer import ConsoleConsumer
from vms import console
from vms.choices import ConsoleDisconnectAction, VMStatus
from vms.console import (
    ConsoleInUse,
    console_closed,
    console_lock_take,
    console_open,
    console_ticket_use,
    token_hash,
)
from vms.models import ConsoleSession, ConsoleTicket, VirtualMachine

pytestmark = pytest.mark.django_db

VNC_PORT = 5999  # what the test driver reports once the test gives its domain a fixed port


def with_vnc_port(vm, port: int = VNC_PORT):
    """Give the test domain's VNC a fixed port: the test driver runs no qemu, so it has none
    of its own (-1); this is the test's setup through libvirt's own driver."""
    conn = hypervisor.connect(vm.host.uri)
    dom = conn._conn.lookupByUUIDString(str(vm.uuid))
    root = ET.fromstring(
        dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    )
    vnc = root.find("devices/graphics[@type='vnc']")
    vnc.set("port", str(port))
    vnc.set("autoport", "no")
    conn._conn.defineXML(ET.tostring(root, encoding="unicode"))
    return vm


def graphics_element(vm):
    dom = hypervisor.connect(vm.host.uri)._conn.lookupByUUIDString(str(vm.uuid))
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    return ET.fromstring(xml).find("devices/graphics[@type='vnc']")


@pytest.fixture
def running(make_vm):
    return with_vnc_port(make_vm(VMStatus.UP))


@pytest.fixture
def user_role(running):
    user = UserFactory(username="carol")
    grant(user, "UserRole", running)
    return user


# -- the domain a VM is ---------------------------------------------------------------------


def test_every_vm_vireo_defines_has_vnc_with_an_expired_password(make_vm):
    vm = make_vm(VMStatus.DOWN)
    vnc = graphics_element(vm)
    assert vnc.get("listen") == "127.0.0.1"
    assert vnc.get("passwdValidTo") == "1970-01-01T00:00:01"  # nobody gets in without a ticket
    assert len(vnc.get("passwd")) == 8
    dom = hypervisor.connect(vm.host.uri)._conn.lookupByUUIDString(str(vm.uuid))
    assert ET.fromstring(dom.XMLDesc(0)).find("devices/video/model").get("type") == "vga"


# -- opening: ticket and password -----------------------------------------------------------


def test_opening_sets_a_password_with_an_expiry_and_a_one_time_ticket(running, user_role):
    before = timezone.now()
    opening = console_open(vm_id=running.pk, user=user_role)
    vnc = graphics_element(running)
    assert vnc.get("passwd") == opening.password and len(opening.password) == 8
    valid_to = opening.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert vnc.get("passwdValidTo") == valid_to
    assert timedelta(seconds=119) < opening.expires_at - before <= timedelta(seconds=121)
    ticket = ConsoleTicket.objects.get()
    assert ticket.token_hash == token_hash(opening.token) != opening.token  # only its hash
    assert (ticket.user, ticket.vm_id, ticket.used_at) == (user_role, running.pk, None)
    assert (opening.reach.address, opening.reach.port, opening.reach.ssh) == (
        "127.0.0.1",
        VNC_PORT,
        (),
    )
    assert Event.objects.filter(vm=running, action="console").exists()


def test_ticket_lifetime_is_a_setting(running, admin, settings):
    settings.VIREO_CONSOLE_TICKET_SECONDS = 30
    opening = console_open(vm_id=running.pk, user=admin)
    assert opening.expires_at - timezone.now() <= timedelta(seconds=30)


@pytest.mark.parametrize(
    "status", [VMStatus.DOWN, VMStatus.SUSPENDED, VMStatus.IMAGE_LOCKED, VMStatus.SAVING_STATE]
)
def test_a_console_needs_a_running_vm(make_vm, admin, status):
    vm = make_vm(status)
    with pytest.raises(ActionRefused, match=f"it is {VMStatus(status).label}"):
        console_open(vm_id=vm.pk, user=admin)
    assert not ConsoleTicket.objects.exists()


def test_a_host_that_is_not_up_is_refused(running, admin):
    running.host.status = "non_responsive"
    running.host.save()
    with pytest.raises(ActionRefused, match="host .* is Non Responsive"):
        console_open(vm_id=running.pk, user=admin)
    assert not ConsoleTicket.objects.exists()


def test_a_vm_whose_display_does_not_listen_is_refused(make_vm, admin):
    vm = make_vm(VMStatus.UP)  # the test driver reports port -1
    with pytest.raises(ActionRefused, match="VNC display is not listening"):
        console_open(vm_id=vm.pk, user=admin)
    assert not ConsoleTicket.objects.exists()


def test_without_the_console_action_nothing_opens(running):
    viewer = UserFactory()
    grant(viewer, "UserVmEngine", running)  # has console
    outsider = UserFactory()
    with pytest.raises(ActionRefused, match="does not exist"):
        console_open(vm_id=running.pk, user=outsider)
    console_open(vm_id=running.pk, user=viewer)


# -- the ticket is used once ----------------------------------------------------------------


def test_a_ticket_is_used_once(running, user_role):
    opening = console_open(vm_id=running.pk, user=user_role)
    ticket = console_ticket_use(vm_id=running.pk, user=user_role, token=opening.token)
    assert ticket.used_at is not None
    with pytest.raises(ActionRefused, match="already used"):
        console_ticket_use(vm_id=running.pk, user=user_role, token=opening.token)


def test_an_expired_ticket_is_refused_and_changes_nothing(running, user_role):
    opening = console_open(vm_id=running.pk, user=user_role)
    ConsoleTicket.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ActionRefused, match="expired .* valid for 120 seconds"):
        console_ticket_use(vm_id=running.pk, user=user_role, token=opening.token)
    assert ConsoleTicket.objects.get().used_at is None


def test_someone_elses_ticket_or_another_vms_is_not_valid(running, user_role, admin, make_vm):
    opening = console_open(vm_id=running.pk, user=user_role)
    with pytest.raises(ActionRefused, match="not valid"):
        console_ticket_use(vm_id=running.pk, user=admin, token=opening.token)
    other = make_vm(VMStatus.UP)
    with pytest.raises(ActionRefused, match="not valid"):
        console_ticket_use(vm_id=other.pk, user=user_role, token=opening.token)
    for junk in (None, "", "x" * 1000, 12):
        with pytest.raises(ActionRefused, match="not valid"):
            console_ticket_use(vm_id=running.pk, user=user_role, token=junk)
    assert ConsoleTicket.objects.get().used_at is None


# -- one user at a time ---------------------------------------------------------------------


def test_a_second_user_without_takeover_rights_is_refused(running, user_role):
    other = UserFactory(username="dave")
    grant(other, "UserRole", running)
    console_lock_take(vm_id=running.pk, user=user_role, channel_name="chan-a", takeover=False)
    with pytest.raises(ConsoleInUse, match="in use by carol .* Only an administrator") as refused:
        console_open(vm_id=running.pk, user=other, takeover=True)
    assert refused.value.may_take_over is False
    with pytest.raises(ConsoleInUse):
        console_lock_take(vm_id=running.pk, user=other, channel_name="chan-b", takeover=True)
    assert ConsoleSession.objects.get().channel_name == "chan-a"
    assert ConsoleTicket.objects.count() == 0


def test_an_administrator_takes_over_and_the_holder_is_named(running, user_role):
    boss = UserFactory(username="boss")
    grant(boss, "ClusterAdmin", running.cluster)
    console_lock_take(vm_id=running.pk, user=user_role, channel_name="chan-a", takeover=False)
    with pytest.raises(ConsoleInUse, match="Take it over") as asked:
        console_open(vm_id=running.pk, user=boss)
    assert asked.value.may_take_over and asked.value.holder == "carol"
    opening = console_open(vm_id=running.pk, user=boss, takeover=True)
    ticket = console_ticket_use(vm_id=running.pk, user=boss, token=opening.token)
    replaced = console_lock_take(
        vm_id=running.pk, user=boss, channel_name="chan-b", takeover=ticket.takeover
    )
    assert replaced == "chan-a"
    assert ConsoleSession.objects.get().user == boss
    assert Event.objects.filter(message__contains="took over the console").exists()
    # The first console's close no longer releases (or acts on) the VM's console.
    assert console_closed(vm_id=running.pk, user=user_role, channel_name="chan-a") == ""
    assert ConsoleSession.objects.get().user == boss


def test_the_same_user_replaces_their_own_console(running, user_role):
    console_lock_take(vm_id=running.pk, user=user_role, channel_name="chan-a", takeover=False)
    replaced = console_lock_take(
        vm_id=running.pk, user=user_role, channel_name="chan-b", takeover=False
    )
    assert replaced == "chan-a"


def test_a_silent_holder_does_not_keep_the_console(running, user_role):
    other = UserFactory()
    grant(other, "UserRole", running)
    console_lock_take(vm_id=running.pk, user=user_role, channel_name="chan-a", takeover=False)
    ConsoleSession.objects.update(seen_at=timezone.now() - timedelta(seconds=600))
    assert (
        console_lock_take(vm_id=running.pk, user=other, channel_name="chan-b", takeover=False)
        == "chan-a"
    )


# -- Console Disconnect Action --------------------------------------------------------------


def test_no_action_leaves_the_vm_running(running, user_role):
    console_lock_take(vm_id=running.pk, user=user_role, channel_name="c", takeover=False)
    assert console_closed(vm_id=running.pk, user=user_role, channel_name="c") == ""
    assert not ConsoleSession.objects.exists()
    assert VirtualMachine.objects.get(pk=running.pk).status == VMStatus.UP


def test_shutdown_on_the_last_disconnect(running, user_role, django_capture_on_commit_callbacks):
    VirtualMachine.objects.filter(pk=running.pk).update(
        console_disconnect_action=ConsoleDisconnectAction.SHUTDOWN
    )
    console_lock_take(vm_id=running.pk, user=user_role, channel_name="c", takeover=False)
    with django_capture_on_commit_callbacks():
        assert console_closed(vm_id=running.pk, user=user_role, channel_name="c") == "shutdown"
    assert VirtualMachine.objects.get(pk=running.pk).status == VMStatus.POWERING_DOWN
    assert Job.objects.get(vm=running).kind == "vm_shutdown"


def test_lock_screen_presses_super_l(running, user_role, monkeypatch):
    VirtualMachine.objects.filter(pk=running.pk).update(
        console_disconnect_action=ConsoleDisconnectAction.LOCK_SCREEN
    )
    pressed = []
    real = hypervisor.Connection.send_keys
    monkeypatch.setattr(
        hypervisor.Connection,
        "send_keys",
        lambda self, uuid, keys: pressed.append(keys) or real(self, uuid, keys),
    )
    console_lock_take(vm_id=running.pk, user=user_role, channel_name="c", takeover=False)
    assert console_closed(vm_id=running.pk, user=user_role, channel_name="c") == "lock screen"
    assert pressed == [console.LOCK_SCREEN_KEYS]  # the test driver's own virDomainSendKey ran
    assert Event.objects.filter(message__contains="screen was locked").exists()


def test_edit_sets_the_console_disconnect_action(admin_client, running):
    url = reverse("vms:edit", args=[running.pk])
    data = {"description": "", "memory_mb": 1024, "vcpus": 1, "console_disconnect_action": "x"}
    admin_client.post(url, data, headers={"HX-Request": "true"})
    assert VirtualMachine.objects.get(pk=running.pk).console_disconnect_action == "none"
    data["console_disconnect_action"] = "shutdown"
    admin_client.post(url, data, headers={"HX-Request": "true"})
    assert VirtualMachine.objects.get(pk=running.pk).console_disconnect_action == "shutdown"


# -- the window and the .vv file ------------------------------------------------------------


def test_the_console_window_receives_its_ticket(client, running, user_role):
    client.force_login(user_role)
    page = client.get(reverse("vms:console", args=[running.pk]))
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"] or "no-cache" in page["Cache-Control"]
    screen = html_one(page, "#console-screen")
    assert screen.get("data-ws") == f"/ws/console/{running.pk}/"
    assert ConsoleTicket.objects.get().token_hash == token_hash(screen.get("data-ticket"))
    assert graphics_element(running).get("passwd") == screen.get("data-password")
    assert screen.get("data-rfb").endswith("vendor/novnc/core/rfb.js")


def test_the_console_window_says_why_it_is_refused(client, running, user_role):
    other = UserFactory()
    grant(other, "UserRole", running)
    console_lock_take(vm_id=running.pk, user=user_role, channel_name="c", takeover=False)
    client.force_login(other)
    page = client.get(reverse("vms:console", args=[running.pk]))
    assert "in use by carol" in html_one(page, "#console-refusal").text_content()
    assert not page.content.decode().count("console-takeover")
    assert not ConsoleTicket.objects.exists()


def test_without_console_the_window_and_file_are_404(client, running):
    client.force_login(UserFactory())
    assert client.get(reverse("vms:console", args=[running.pk])).status_code == 404
    assert client.get(reverse("vms:console_file", args=[running.pk])).status_code == 404


def test_the_native_client_file(client, running, user_role):
    client.force_login(user_role)
    response = client.get(reverse("vms:console_file", args=[running.pk]))
    assert response["Content-Type"] == "application/x-virt-viewer"
    assert 'filename="console.vv"' in response["Content-Disposition"]
    lines = response.content.decode().splitlines()
    assert lines[0] == "[virt-viewer]"
    fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line and line[0] != "#")
    assert fields["type"] == "vnc" and fields["port"] == str(VNC_PORT)
    assert fields["host"] == "127.0.0.1" and fields["delete-this-file"] == "1"
    assert fields["password"] == graphics_element(running).get("passwd")
    assert ConsoleTicket.objects.get().used_at is not None  # the file is its one use


# -- the websocket --------------------------------------------------------------------------


async def socket_for(user, vm):
    communicator = WebsocketCommunicator(ConsoleConsumer.as_asgi(), f"/ws/console/{vm.pk}/")
    communicator.scope["user"] = user
    communicator.scope["url_route"] = {"kwargs": {"pk": vm.pk}}
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_reused_ticket_is_closed_with_its_reason(running, user_role):
    from channels.db import database_sync_to_async

    opening = await database_sync_to_async(console_open)(vm_id=running.pk, user=user_role)
    await database_sync_to_async(console_ticket_use)(
        vm_id=running.pk, user=user_role, token=opening.token
    )
    communicator = await socket_for(user_role, running)
    await communicator.send_json_to({"ticket": opening.token})
    assert "already used" in (await communicator.receive_json_from(timeout=5))["error"]
    closed = await communicator.receive_output(timeout=5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4403)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_ticket_reaches_for_the_vnc_port_and_says_when_it_cannot(running, user_role):
    from channels.db import database_sync_to_async

    opening = await database_sync_to_async(console_open)(vm_id=running.pk, user=user_role)
    communicator = await socket_for(user_role, running)
    await communicator.send_json_to({"ticket": opening.token})
    # Nothing listens on the test driver's port: the ticket is spent, the lock given back.
    reply = await communicator.receive_json_from(timeout=15)
    assert reply["error"].startswith(f"Cannot reach the console at 127.0.0.1:{VNC_PORT}")
    await communicator.receive_output(timeout=5)
    assert await database_sync_to_async(ConsoleSession.objects.exists)() is False
    ticket = await database_sync_to_async(ConsoleTicket.objects.get)()
    assert ticket.used_at is not None


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_socket_of_someone_without_console_is_closed_404(running):
    from channels.db import database_sync_to_async

    stranger = await database_sync_to_async(UserFactory)()
    communicator = await socket_for(stranger, running)
    assert (await communicator.receive_json_from(timeout=5)) == {"error": "Not found."}
    closed = await communicator.receive_output(timeout=5)
    assert closed["code"] == 4404


# -- where the web process reaches the port ---------------------------------------------------


def _reach(uri: str, listen: str, port: int = 5901):
    from types import SimpleNamespace

    vm = SimpleNamespace(name="vm1", host=SimpleNamespace(uri=uri, name="kvm1"))
    return console.console_reach(vm, hypervisor.GraphicsInfo("vnc", port, listen))


def test_a_local_host_is_reached_on_its_loopback():
    reach = _reach("qemu:///system", "127.0.0.1")
    assert (reach.address, reach.port, reach.ssh, reach.client_note) == ("127.0.0.1", 5901, (), "")


def test_a_remote_host_listening_on_an_address_is_reached_directly():
    assert _reach("qemu+ssh://root@kvm1.example.com/system", "10.0.0.5").address == "10.0.0.5"
    anywhere = _reach("qemu+tls://kvm1.example.com/system", "0.0.0.0")
    assert (anywhere.address, anywhere.ssh) == ("kvm1.example.com", ())


def test_a_qemu_ssh_host_listening_on_loopback_is_reached_through_ssh():
    reach = _reach(
        "qemu+ssh://admin@kvm1.example.com:2222/system?keyfile=/etc/vireo/id", "127.0.0.1"
    )
    assert reach.ssh == (
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-W",
        "127.0.0.1:5901",
        "-p",
        "2222",
        "-l",
        "admin",
        "-i",
        "/etc/vireo/id",
        "--",
        "kvm1.example.com",
    )
    assert "ssh -L 5901:127.0.0.1:5901" in reach.client_note  # the .vv file's way in
    unchecked = _reach("qemu+ssh://kvm1.example.com/system?no_verify=1", "127.0.0.1").ssh
    assert unchecked[-6:-2] == (
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
    )


@pytest.mark.parametrize(
    "uri",
    [
        "qemu+ssh://-oProxyCommand=evil/system",
        "qemu+ssh://root@kvm1;reboot/system",
        "qemu+ssh://-l@kvm1/system",
    ],
)
def test_nothing_from_the_uri_becomes_an_ssh_option(uri):
    with pytest.raises(ActionRefused, match="Cannot open an SSH tunnel"):
        _reach(uri, "127.0.0.1")


def test_a_loopback_display_on_a_tls_host_is_refused_with_the_setting_to_use():
    with pytest.raises(ActionRefused, match="VIREO_CONSOLE_LISTEN"):
        _reach("qemu+tls://kvm1.example.com/system", "127.0.0.1")


# -- the ticket's password is spent once the page is in ----------------------------------------


def _server_side(result: bytes, types: bytes = b"\x02") -> bytes:
    return b"RFB 003.008\n" + bytes([len(types)]) + types + b"c" * 16 + result


def test_the_login_watch_sees_vnc_authentication_succeed_in_any_chunks():
    from portal.shell.console_consumer import LoginWatch

    watch = LoginWatch()
    assert not watch.feed(client=b"RFB 003.008\n\x02")
    server = _server_side(b"\0\0\0\0") + b"\x03\x20"  # ServerInit follows
    said = [watch.feed(server=server[i : i + 5]) for i in range(0, len(server), 5)]
    assert said.count(True) == 1
    assert not watch.feed(server=b"more")


@pytest.mark.parametrize(
    ("server", "client"),
    [
        (_server_side(b"\0\0\0\1"), b"RFB 003.008\n"),  # a wrong password
        (_server_side(b"\0\0\0\0", types=b"\x01"), b"RFB 003.008\n"),  # no password at all
        (_server_side(b"\0\0\0\0"), b"RFB 003.003\n"),  # another version: not followed
    ],
)
def test_the_login_watch_stays_quiet_otherwise(server, client):
    from portal.shell.console_consumer import LoginWatch

    watch = LoginWatch()
    assert not watch.feed(client=client)
    assert not watch.feed(server=server)


def test_a_spent_password_opens_nothing(running, user_role):
    opening = console_open(vm_id=running.pk, user=user_role)
    console.console_password_spent(vm_id=running.pk)
    vnc = graphics_element(running)
    assert vnc.get("passwd") != opening.password
    assert vnc.get("passwdValidTo") == "1970-01-01T00:00:01"


def test_long_expired_tickets_are_dropped_at_the_next_opening(running, user_role):
    console_open(vm_id=running.pk, user=user_role)
    ConsoleTicket.objects.update(expires_at=timezone.now() - timedelta(hours=2))
    console_open(vm_id=running.pk, user=user_role)
    assert ConsoleTicket.objects.count() == 1
