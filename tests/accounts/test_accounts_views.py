"""The roles and permissions screens: the Permissions sub-tab and its Add and Remove windows,
the Configure window (Roles, System Permissions), and the User Portal."""

import html
import re
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from factories import (
    ClusterFactory,
    DataCenterFactory,
    HostFactory,
    StorageDomainFactory,
    SuperUserFactory,
    UserFactory,
    VMFactory,
    grant,
)
from guardian.conf import settings as guardian_settings
from helpers import HX, GiB

from accounts import services
from accounts.models import Role, System
from accounts.permissions import actions_on, can, holds_admin_role, object_permissions, restrict
from portal.consumers import LiveConsumer
from portal.errors import ActionRefused
from portal.live import send_now
from portal.models import Event
from vms.choices import VMStatus
from vms.models import Template, VirtualMachine


def build_world():
    """Data center Paris (cluster, host, storage, a Down and an Up VM, a template), another
    data center with one VM, and a few accounts."""
    dc = DataCenterFactory(name="Paris")
    cluster = ClusterFactory(name="paris-1", data_center=dc)
    host = HostFactory(name="paris-h1", cluster=cluster)
    sd = StorageDomainFactory(name="paris-data", data_center=dc)
    web = VMFactory(name="web1", host=host)
    db = VMFactory(name="db1", host=host, status=VMStatus.UP)
    template = Template.objects.create(name="rhel9", data_center=dc, disk_bytes=2 * GiB)
    elsewhere = VMFactory(name="far1", host=HostFactory(cluster=ClusterFactory()))
    engine = UserFactory(username="engine")
    grant(engine, "UserVmEngine", web)
    alice = UserFactory(username="alice", first_name="Alice", last_name="Martin")
    bob = UserFactory(username="bob", first_name="Bob", last_name="Builder")
    ops = Group.objects.create(name="ops-team")
    ops.user_set.add(bob)
    return {
        "dc": dc,
        "cluster": cluster,
        "host": host,
        "sd": sd,
        "web": web,
        "db": db,
        "template": template,
        "elsewhere": elsewhere,
        "engine": engine,
        "alice": alice,
        "bob": bob,
        "ops": ops,
    }


@pytest.fixture
def world(db):
    return build_world()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()


def permission_rows(response) -> list[tuple[str, str, str, str]]:
    """(User/Group badge, principal, role, inherited from) of each row of a Permissions list."""
    rows = []
    for row in re.findall(r'<tr class="perm-row">(.*?)</tr>', response.content.decode(), re.S):
        cells = [text(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        rows.append(tuple(cells[:4]))
    return rows


def picker(response) -> list[str]:
    """The principals the Add window offers: user:<username> or group:<name>."""
    body = response.content.decode()
    found = []
    for kind, _pk, label in re.findall(
        r'name="principal" value="(user|group):(\d+)"[^>]*></td><td><label[^>]*>([^<]*)</label>',
        body,
    ):
        found.append(f"{kind}:{label}")
    return found


def role_options(response) -> set[str]:
    select = re.search(r'<select name="role">(.*?)</select>', response.content.decode(), re.S)
    return set(re.findall(r"<option [^>]*>([^<]+)</option>", select.group(1))) if select else set()


def messages(response) -> list[str]:
    return [
        text(m)
        for m in re.findall(
            r'<div class="msg [^"]*"[^>]*>(.*?)</div>', response.content.decode(), re.S
        )
    ]


def card_ids(response) -> set[int]:
    return {int(pk) for pk in re.findall(r'id="vm-card-(\d+)"', response.content.decode())}


def card_buttons(response, vm) -> dict[str, bool]:
    """Each User Portal action button of a VM's card -> enabled?"""
    card = re.search(
        rf'id="vm-card-{vm.pk}".*?<div class="card-actions">(.*?)</div>',
        response.content.decode(),
        re.S,
    )
    assert card, f"no card for {vm.name}"
    return {
        action: "disabled" not in attrs
        for attrs, action in re.findall(
            r'<button([^>]*data-card-action="(\w+)"[^>]*)>', card.group(1)
        )
    }


# -- the Permissions sub-tab ------------------------------------------------------------------


def test_permissions_tab_lists_user_group_role_and_inherited_from(world):
    dcadmin = UserFactory(username="dcadmin")
    grant(dcadmin, "DataCenterAdmin", world["dc"])
    grant(world["alice"], "UserRole", world["web"])
    grant(world["ops"], "UserRole", world["web"])
    grant(UserFactory(username="clusterboss"), "ClusterAdmin", world["cluster"])
    grant(UserFactory(username="everywhere"), "UserRole", System.get())
    grant(UserFactory(username="unrelated"), "UserRole", world["elsewhere"])
    root = SuperUserFactory(username="root")
    client = client_for(root)
    pane = client.get(reverse("vms:details", args=[world["web"].pk, "permissions"]))
    assert reverse("permissions", args=["vm", world["web"].pk]) in pane.content.decode()

    rows = permission_rows(client.get(reverse("permissions", args=["vm", world["web"].pk])))
    assert set(rows) == {
        ("User", "alice", "UserRole", "(this object)"),
        ("User", "engine", "UserVmEngine", "(this object)"),
        ("Group", "ops-team", "UserRole", "(this object)"),
        ("User", "dcadmin", "DataCenterAdmin", "Data Center Paris"),
        ("User", "clusterboss", "ClusterAdmin", "Cluster paris-1"),
        ("User", "everywhere", "UserRole", "System"),
        ("User", "root", "SuperUser", "System"),
    }
    # Own permissions first, and only they can be removed here.
    assert [r[3] for r in rows[:3]] == ["(this object)"] * 3
    body = client.get(reverse("permissions", args=["vm", world["web"].pk])).content.decode()
    assert body.count(">Remove</button>") == 3

    window = client.get(reverse("permissions", args=["datacenter", world["dc"].pk]) + "?window=1")
    assert "Permissions: Paris" in window.content.decode()
    assert ("User", "dcadmin", "DataCenterAdmin", "(this object)") in permission_rows(window)


def test_permissions_tab_without_manage_permissions_has_no_add_or_remove(world):
    # An administrative role over the VM (TemplateAdmin on its data center) reads the tab.
    grant(world["alice"], "TemplateAdmin", world["dc"])
    response = client_for(world["alice"]).get(reverse("permissions", args=["vm", world["web"].pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert ">Add</button>" not in body and ">Remove</button>" not in body
    engine_view = client_for(world["engine"]).get(
        reverse("permissions", args=["vm", world["web"].pk])
    )
    assert ">Add</button>" in engine_view.content.decode()


# -- the Add Permission window ----------------------------------------------------------------


def test_add_window_search_and_go(world):
    client = client_for(world["engine"])
    url = reverse("permission_add", args=["vm", world["web"].pk])
    first = client.get(url)
    assert "Search" in first.content.decode() and ">Go</button>" in first.content.decode()
    assert picker(first) == []  # nothing listed before Go

    assert picker(client.get(url, {"q": "ali"})) == ["user:Alice Martin"]  # part of a user name
    assert picker(client.get(url, {"q": "martin"})) == ["user:Alice Martin"]  # last name
    assert picker(client.get(url, {"q": "Bob"})) == ["user:Bob Builder"]  # first name
    assert picker(client.get(url, {"q": "ops"})) == ["group:ops-team"]  # part of a group name
    everyone = picker(client.get(url, {"q": ""}))
    assert {"user:Alice Martin", "user:Bob Builder", "user:engine", "group:ops-team"} <= set(
        everyone
    )
    assert not any(guardian_settings.ANONYMOUS_USER_NAME in p for p in everyone)
    none = client.get(url, {"q": "zzz"})
    assert picker(none) == [] and "No user or group matches." in none.content.decode()


def test_add_offers_only_roles_the_granter_may_hand_out(world):
    response = client_for(world["engine"]).get(
        reverse("permission_add", args=["vm", world["web"].pk])
    )
    offered = role_options(response)
    assert "UserRole" in offered and "UserVmEngine" in offered
    assert not offered & {"ClusterAdmin", "SuperUser", "DataCenterAdmin", "PowerUserRole"}
    root = client_for(SuperUserFactory()).get(
        reverse("permission_add", args=["vm", world["web"].pk])
    )
    assert {"ClusterAdmin", "SuperUser"} <= role_options(root)


def test_add_creates_the_permission_and_an_event(world):
    client = client_for(world["engine"])
    url = reverse("permission_add", args=["vm", world["web"].pk])
    user_role = Role.objects.get(name="UserRole")
    assert not restrict(world["alice"], VirtualMachine.objects.all()).exists()
    response = client.post(
        url, {"principal": [f"user:{world['alice'].pk}"], "role": user_role.pk}, headers=HX
    )
    assert messages(response) == ["alice now holds UserRole on web1."]
    assert list(restrict(world["alice"], VirtualMachine.objects.all(), "run")) == [world["web"]]
    event = Event.objects.get(action="add_permission")
    assert event.user == world["engine"] and event.vm == world["web"]
    assert event.message == "engine gave UserRole on virtualmachine web1 to alice."
    rows = permission_rows(client.get(reverse("permissions", args=["vm", world["web"].pk])))
    assert ("User", "alice", "UserRole", "(this object)") in rows
    again = client.post(
        url, {"principal": [f"user:{world['alice'].pk}"], "role": user_role.pk}, headers=HX
    )
    assert messages(again) == ["alice already holds UserRole on web1."]


def test_add_refuses_roles_not_offered_unknown_principals_and_empty_choices(world):
    client = client_for(world["engine"])
    url = reverse("permission_add", args=["vm", world["web"].pk])
    before = list(object_permissions(world["web"]))
    cluster_admin = Role.objects.get(name="ClusterAdmin")
    refused = client.post(
        url, {"principal": [f"user:{world['alice'].pk}"], "role": cluster_admin.pk}
    )
    assert refused.status_code == 200
    assert "Choose a role you may assign." in refused.content.decode()
    user_role = Role.objects.get(name="UserRole").pk
    nobody = client.post(url, {"principal": ["user:999999999"], "role": user_role}, headers=HX)
    assert messages(nobody) == ["That user or group does not exist any more."]
    for bad in ("group:999999999", "user:abc", "user:"):
        response = client.post(url, {"principal": [bad], "role": user_role}, headers=HX)
        assert messages(response) == ["That user or group does not exist any more."]
    empty = client.post(url, {"role": user_role})
    assert "Tick at least one user or group." in empty.content.decode()
    assert list(object_permissions(world["web"])) == before
    assert not Event.objects.filter(action="add_permission").exists()
    # On a VM the granter does not manage, the window does not exist.
    assert client.get(reverse("permission_add", args=["vm", world["db"].pk])).status_code == 404
    assert client.get(reverse("permission_add", args=["nosuchkind", 1])).status_code == 404


def test_group_grants_work(world):
    client = client_for(world["engine"])
    user_role = Role.objects.get(name="UserRole").pk
    response = client.post(
        reverse("permission_add", args=["vm", world["web"].pk]),
        {"principal": [f"group:{world['ops'].pk}"], "role": user_role},
        headers=HX,
    )
    assert messages(response) == ["ops-team now holds UserRole on web1."]
    card = reverse("user_vm_card", args=[world["web"].pk])
    assert client_for(world["bob"]).get(card).status_code == 200  # a member
    assert client_for(world["alice"]).get(card).status_code == 404  # not a member
    portal = client_for(world["bob"]).get(reverse("user_portal"))
    assert card_ids(portal) == {world["web"].pk}
    rows = permission_rows(client.get(reverse("permissions", args=["vm", world["web"].pk])))
    assert ("Group", "ops-team", "UserRole", "(this object)") in rows


# -- Remove: at once, over HTTP and the websocket ---------------------------------------------


@pytest.fixture
def own_channel_prefix(settings):
    layers = {name: dict(conf) for name, conf in settings.CHANNEL_LAYERS.items()}
    layers["default"]["CONFIG"] = {
        **layers["default"]["CONFIG"],
        "prefix": f"accviews-{uuid.uuid4().hex[:12]}",
    }
    settings.CHANNEL_LAYERS = layers


async def following(user, topic: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    ok, _ = await communicator.connect()
    assert ok
    await communicator.send_json_to({"subscribe": [topic]})
    assert await communicator.receive_json_from(timeout=5) == {"subscribed": [topic], "refused": []}
    return communicator


def _row_id(obj, principal) -> tuple[str, int]:
    row = next(r for r in object_permissions(obj) if r.principal == principal and not r.inherited)
    return row.kind, row.id


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_remove_asks_then_takes_access_away_at_once(own_channel_prefix):
    world = await database_sync_to_async(build_world)()
    web = world["web"]
    topic = f"vm.{web.pk}"

    def setup():
        user_role = Role.objects.get(name="UserRole")
        for principal in (world["alice"], world["ops"]):
            services.permission_add(
                user=world["engine"], principal=principal, role=user_role, obj=web
            )
        return client_for(world["engine"]), client_for(world["alice"]), client_for(world["bob"])

    engine, alice, bob = await database_sync_to_async(setup)()
    card = reverse("user_vm_card", args=[web.pk])
    assert (await database_sync_to_async(alice.get)(card)).status_code == 200
    alice_socket = await following(world["alice"], topic)
    bob_socket = await following(world["bob"], topic)

    kind, row_id = await database_sync_to_async(_row_id)(web, world["alice"])
    url = reverse("permission_remove", args=["vm", web.pk, kind, row_id])
    confirm = await database_sync_to_async(engine.get)(url)
    assert (
        "Are you sure you want to remove the following permission(s)?" in confirm.content.decode()
    )
    assert "alice — UserRole on web1" in confirm.content.decode()
    done = await database_sync_to_async(engine.post)(url, headers=HX)
    assert messages(done) == ["Removed UserRole from alice."]
    assert await database_sync_to_async(
        Event.objects.filter(action="remove_permission", vm=web, user=world["engine"]).exists
    )()

    # The removal reaches alice's open socket, and nothing more about the VM does.
    assert await alice_socket.receive_json_from(timeout=5) == {"revoked": [topic]}
    assert (await database_sync_to_async(alice.get)(card)).status_code == 404
    await database_sync_to_async(send_now)(topic)
    assert await alice_socket.receive_nothing(timeout=0.3)
    assert await bob_socket.receive_json_from(timeout=5) == {"topic": topic}  # bob still follows

    # A group's permission: removing it revokes its members.
    kind, row_id = await database_sync_to_async(_row_id)(web, world["ops"])
    url = reverse("permission_remove", args=["vm", web.pk, kind, row_id])
    done = await database_sync_to_async(engine.post)(url, headers=HX)
    assert messages(done) == ["Removed UserRole from ops-team."]
    assert await bob_socket.receive_json_from(timeout=5) == {"revoked": [topic]}
    assert (await database_sync_to_async(bob.get)(card)).status_code == 404
    await database_sync_to_async(send_now)(topic)
    assert await bob_socket.receive_nothing(timeout=0.3)
    await alice_socket.disconnect()
    await bob_socket.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_editing_a_role_revokes_what_its_holders_may_no_longer_follow(own_channel_prefix):
    """Taking an action out of a custom role reaches users holding it directly and through a
    group."""
    world = await database_sync_to_async(build_world)()
    web = world["web"]
    topic = f"vm.{web.pk}"
    root = await database_sync_to_async(SuperUserFactory)()

    def setup():
        role = services.role_create(
            user=root, name="Watcher", description="", is_admin=False, actions=["login", "view"]
        )
        grant(world["alice"], "Watcher", web)
        grant(world["ops"], "Watcher", web)
        return role

    role = await database_sync_to_async(setup)()
    alice_socket = await following(world["alice"], topic)
    bob_socket = await following(world["bob"], topic)
    await database_sync_to_async(services.role_update)(
        user=root,
        role_id=role.pk,
        name="Watcher",
        description="",
        is_admin=False,
        actions=["login"],
    )
    assert await alice_socket.receive_json_from(timeout=5) == {"revoked": [topic]}
    assert await bob_socket.receive_json_from(timeout=5) == {"revoked": [topic]}
    await alice_socket.disconnect()
    await bob_socket.disconnect()


def test_remove_only_own_rows_and_only_by_managers(world):
    dcadmin = UserFactory(username="dcadmin")
    grant(dcadmin, "DataCenterAdmin", world["dc"])
    grant(world["alice"], "UserRole", world["web"])
    client = client_for(world["engine"])
    # An inherited row is removed where it was given, not on the VM.
    dc_kind, dc_row = _row_id(world["dc"], dcadmin)
    inherited = reverse("permission_remove", args=["vm", world["web"].pk, dc_kind, dc_row])
    assert client.get(inherited).status_code == 404
    assert client.post(inherited).status_code == 404
    # A user without manage_permissions on the VM gets no window at all.
    kind, row = _row_id(world["web"], world["alice"])
    own = reverse("permission_remove", args=["vm", world["web"].pk, kind, row])
    assert client_for(world["alice"]).post(own).status_code == 404
    assert can(world["alice"], "run", world["web"])
    # UserVmEngine may not take away a role it could not have given.
    boss = UserFactory(username="boss")
    grant(boss, "ClusterAdmin", world["web"])
    kind, row = _row_id(world["web"], boss)
    url = reverse("permission_remove", args=["vm", world["web"].pk, kind, row])
    refused = client.post(url, headers=HX)
    assert messages(refused) == ["You may not remove the role ClusterAdmin."]
    assert can(boss, "edit_cluster", world["web"])
    with pytest.raises(ActionRefused, match="You may not remove permissions on Paris"):
        services.permission_remove(
            user=world["engine"], kind=dc_kind, row_id=dc_row, obj=world["dc"]
        )


# -- Configure: Roles and System Permissions --------------------------------------------------


def role_rows(response) -> dict[str, str]:
    """Role name -> the text of its row's buttons on the Roles list."""
    rows = {}
    for row in re.findall(r"<tr><td>(.*?)</tr>", response.content.decode(), re.S):
        name = text(row.split("</td>", 1)[0]).replace("(built-in)", "").strip()
        rows[name] = " ".join(re.findall(r"<button[^>]*>([^<]*)</button>", row))
    return rows


def test_configure_lists_roles_built_in_ones_view_only(world):
    client = client_for(SuperUserFactory())
    response = client.get(reverse("configure"))
    assert response.status_code == 200
    rows = role_rows(response)
    assert set(rows) == set(Role.objects.values_list("name", flat=True))
    assert all(
        rows[name] == "View"
        for name in Role.objects.filter(builtin=True).values_list("name", flat=True)
    )
    assert reverse("role_new") in response.content.decode()
    builtin = Role.objects.get(name="UserRole")
    window = client.get(reverse("role_edit", args=[builtin.pk])).content.decode()
    assert "Built-in roles cannot be edited or removed." in window
    assert "<fieldset disabled" in window and ">OK</button>" not in window


def test_new_role_edit_and_remove(world):
    root = SuperUserFactory()
    client = client_for(root)
    response = client.post(
        reverse("role_new"),
        {
            "name": "Operator",
            "description": "Runs the web tier",
            "account_type": "user",
            "actions": ["login", "view", "run", "shutdown"],
        },
        headers=HX,
    )
    assert messages(response) == ["Role Operator saved."]
    role = Role.objects.get(name="Operator")
    assert (role.builtin, role.is_admin, role.description) == (False, False, "Runs the web tier")
    assert role.action_set == {"login", "view", "run", "shutdown"}
    assert Event.objects.filter(action="add_role", object_name="Operator").exists()
    assert role_rows(client.get(reverse("configure")))["Operator"] == "Edit Remove"

    window = client.get(reverse("role_edit", args=[role.pk])).content.decode()
    assert 'value="Operator"' in window and "Built-in" not in window
    response = client.post(
        reverse("role_edit", args=[role.pk]),
        {"name": "Operator", "description": "", "account_type": "admin", "actions": ["view"]},
        headers=HX,
    )
    assert messages(response) == ["Role Operator saved."]
    role.refresh_from_db()
    assert role.is_admin and role.action_set == {"view"}

    # Its holders are Administration Portal users now; while assigned it cannot be removed.
    grant(world["alice"], "Operator", world["web"])
    remove = reverse("role_remove", args=[role.pk])
    assert "Are you sure you want to remove the role" in client.get(remove).content.decode()
    refused = client.post(remove, headers=HX)
    assert messages(refused) == [
        "Operator is assigned to users or groups; remove those permissions first."
    ]
    assert Role.objects.filter(pk=role.pk).exists()
    kind, row = _row_id(world["web"], world["alice"])
    services.permission_remove(user=root, kind=kind, row_id=row, obj=world["web"])
    assert messages(client.post(remove, headers=HX)) == ["Role Operator removed."]
    assert not Role.objects.filter(pk=role.pk).exists()
    assert Event.objects.filter(action="remove_role", object_name="Operator").exists()


def test_role_window_refuses_bad_input(world):
    client = client_for(SuperUserFactory())
    data = {"name": "Nothing", "description": "", "account_type": "user", "actions": []}
    response = client.post(reverse("role_new"), data)
    assert "Tick at least one action permission." in response.content.decode()
    data.update(name="userrole", actions=["view"])  # names are unique whatever the case
    assert "already exists" in client.post(reverse("role_new"), data).content.decode()
    data.update(name="has space")
    assert "Role name is required" in client.post(reverse("role_new"), data).content.decode()
    assert not Role.objects.filter(builtin=False).exists()


def test_built_in_roles_cannot_be_edited_or_removed(world):
    root = SuperUserFactory()
    client = client_for(root)
    role = Role.objects.get(name="UserRole")
    actions = set(role.action_set)
    client.post(
        reverse("role_edit", args=[role.pk]),
        {"name": "Renamed", "description": "x", "account_type": "admin", "actions": ["view"]},
    )
    role.refresh_from_db()
    assert (role.name, role.is_admin, role.action_set) == ("UserRole", False, actions)
    refused = client.post(reverse("role_remove", args=[role.pk]), headers=HX)
    assert messages(refused) == ["UserRole is a built-in role; it cannot be removed."]
    with pytest.raises(ActionRefused, match="built-in role; it cannot be edited"):
        services.role_update(
            user=root,
            role_id=role.pk,
            name="UserRole",
            description="",
            is_admin=False,
            actions=["view"],
        )
    with pytest.raises(ActionRefused, match="built-in role; it cannot be removed"):
        services.role_remove(user=root, role_id=role.pk)
    assert Role.objects.filter(pk=role.pk, builtin=True).exists()


def test_administrators_without_manage_roles_see_roles_read_only(world):
    dcadmin = UserFactory(username="dcadmin")
    grant(dcadmin, "DataCenterAdmin", System.get())
    client = client_for(dcadmin)
    response = client.get(reverse("configure"))
    assert response.status_code == 200
    assert set(role_rows(response).values()) == {""}
    assert reverse("role_new") not in response.content.decode()
    with pytest.raises(ActionRefused):
        services.role_create(
            user=dcadmin, name="Mine", description="", is_admin=True, actions=["view"]
        )


def test_system_permissions_tab_lists_system_scope_grants(world):
    carol = UserFactory(username="carol")
    grant(carol, "PowerUserRole", System.get())
    grant(world["ops"], "UserRole", System.get())
    grant(world["alice"], "UserRole", world["web"])  # not a system permission
    client = client_for(SuperUserFactory(username="root"))
    tab = client.get(reverse("configure"), {"tab": "system"})
    system_url = reverse("permissions", args=["system", System.get().pk])
    assert system_url in tab.content.decode()
    rows = permission_rows(client.get(system_url))
    assert set(rows) == {
        ("User", "carol", "PowerUserRole", "(this object)"),
        ("Group", "ops-team", "UserRole", "(this object)"),
        ("User", "root", "SuperUser", "System"),
    }


# -- the User Portal --------------------------------------------------------------------------


def test_user_portal_shows_exactly_the_users_vms_with_actions_by_status(world):
    alice = world["alice"]
    grant(alice, "UserRole", world["web"])
    grant(alice, "UserRole", world["db"])
    client = client_for(alice)
    landing = client.get(reverse("home"))
    assert landing.status_code == 302 and landing.url == reverse("user_portal")
    portal = client.get(reverse("user_portal"))
    assert card_ids(portal) == {world["web"].pk, world["db"].pk}
    assert card_buttons(portal, world["web"]) == {
        "run": True,
        "shutdown": False,
        "suspend": False,
        "reboot": False,
    }
    assert card_buttons(portal, world["db"]) == {
        "run": False,
        "shutdown": True,
        "suspend": True,
        "reboot": True,
    }
    body = portal.content.decode()
    assert "Administration Portal</a>" not in body and "New VM" not in body
    assert ">Permissions</button>" not in body  # UserRole does not manage permissions

    for name in ("vms:list", "vms:hosts", "vms:clusters", "storage:domains", "events", "configure"):
        refused = client.get(reverse(name))
        assert refused.status_code == 403, name
        assert reverse("user_portal") in refused.content.decode()
    assert client.get(reverse("user_vm_card", args=[world["elsewhere"].pk])).status_code == 404
    assert client.get(reverse("user_vm_card", args=[world["web"].pk])).status_code == 200

    # Acting from a card goes through the shared action endpoint.
    done = client.post(
        reverse("vms:action", args=["shutdown"]), {"vm": world["web"].pk}, headers=HX
    )
    assert messages(done) == ["Cannot shut down web1: the VM is Down."]
    remove = client.post(reverse("vms:action", args=["remove"]), {"vm": world["web"].pk})
    assert remove.status_code == 404


def test_user_portal_of_a_vm_engine_offers_permissions(world):
    portal = client_for(world["engine"]).get(reverse("user_portal"))
    assert card_ids(portal) == {world["web"].pk}
    assert reverse("permissions", args=["vm", world["web"].pk]) in portal.content.decode()


def test_a_user_without_roles_sees_an_empty_user_portal(world):
    client = client_for(UserFactory(username="newbie"))
    assert client.get(reverse("home")).url == reverse("user_portal")
    portal = client.get(reverse("user_portal"))
    assert portal.status_code == 200 and card_ids(portal) == set()
    assert "No virtual machines are assigned to you yet." in portal.content.decode()
    assert "New VM" not in portal.content.decode()
    assert client.get(reverse("vms:new")).status_code == 404


def new_vm_form(world, name: str, template=None) -> dict:
    return {
        "template": template.pk if template else "",
        "name": name,
        "description": "",
        "cluster": world["cluster"].pk,
        "memory_mb": 1024,
        "vcpus": 1,
        "disk_size_gb": 1,
        "storage_domain": world["sd"].pk,
        "allocation": "thin",
    }


def test_the_creator_of_a_vm_holds_user_vm_engine_on_it(world):
    creator = UserFactory(username="maker")
    grant(creator, "VmCreator", System.get())
    grant(creator, "DiskCreator", System.get())
    client = client_for(creator)
    assert "New VM" in client.get(reverse("user_portal")).content.decode()
    assert client.get(reverse("vms:new")).status_code == 200
    response = client.post(reverse("vms:new"), new_vm_form(world, "mine1"), headers=HX)
    assert messages(response) == ["Creating VM mine1."]
    vm = VirtualMachine.objects.get(name="mine1")
    assert vm.created_by == creator
    own = [r for r in object_permissions(vm) if not r.inherited]
    assert [(r.principal, r.role.name) for r in own] == [(creator, "UserVmEngine")]
    assert can(creator, "edit_vm", vm) and can(creator, "manage_permissions", vm)
    portal = client.get(reverse("user_portal"))
    assert card_ids(portal) == {vm.pk}
    assert not can(creator, "view", world["web"])


def test_a_template_based_vm_user_creates_only_from_a_template(world):
    user = UserFactory(username="tpluser")
    grant(user, "UserTemplateBasedVm", world["dc"])
    client = client_for(user)
    form = client.get(reverse("vms:new")).content.decode()
    assert "rhel9" in form
    blank = client.post(reverse("vms:new"), new_vm_form(world, "blank1"), headers=HX)
    assert blank.status_code == 200
    assert "In cluster paris-1 you may create VMs only from a template." in blank.content.decode()
    assert not VirtualMachine.objects.filter(name="blank1").exists()
    made = client.post(
        reverse("vms:new"), new_vm_form(world, "fromtpl1", world["template"]), headers=HX
    )
    assert messages(made) == ["Creating VM fromtpl1."]
    vm = VirtualMachine.objects.get(name="fromtpl1")
    assert vm.template == world["template"] and vm.created_by == user
    assert card_ids(client.get(reverse("user_portal"))) == {vm.pk}


# -- who may hand out an administrative role; who may read a Permissions window ---------------


def _admin_role_of_vm_actions() -> Role:
    """A custom administrative role made only of actions a UserVmEngine holds on its VM."""
    role = Role.objects.create(name="VmOperatorAdmin", is_admin=True, description="custom")
    for action in ("login", "view", "run"):
        role.actions.create(action=action)
    return role


def test_a_user_portal_user_cannot_give_themselves_an_administrative_role(world):
    """UserVmEngine on one VM: the custom administrative role is neither offered nor given,
    and the Administration Portal stays closed."""
    engine, web = world["engine"], world["web"]
    role = _admin_role_of_vm_actions()
    assert role.action_set <= actions_on(engine, web)
    assert role not in services.assignable_roles(engine, web)
    with pytest.raises(ActionRefused, match="You may not hand out the role VmOperatorAdmin"):
        services.permission_add(user=engine, principal=engine, role=role, obj=web)
    client = client_for(engine)
    url = reverse("permission_add", args=["vm", web.pk])
    assert "VmOperatorAdmin" not in client.get(url, {"q": "engine"}).content.decode()
    response = client.post(url, {"principal": f"user:{engine.pk}", "role": role.pk}, headers=HX)
    assert "Choose a role you may assign." in response.content.decode()
    assert client.get(reverse("vms:list")).status_code == 403
    assert not holds_admin_role(engine, web)
    assert not Event.objects.filter(action="add_permission").exists()
    # ... nor take one away that an administrator gave there.
    services.permission_add(user=SuperUserFactory(), principal=world["alice"], role=role, obj=web)
    row = next(r for r in object_permissions(web) if r.principal == world["alice"])
    with pytest.raises(ActionRefused, match="You may not remove the role VmOperatorAdmin"):
        services.permission_remove(user=engine, kind="user", row_id=row.id, obj=web)


def test_an_administrator_there_may_hand_out_an_administrative_role(world):
    admin = UserFactory(username="clusteradmin")
    grant(admin, "ClusterAdmin", world["cluster"])
    role = _admin_role_of_vm_actions()
    assert role in services.assignable_roles(admin, world["web"])
    services.permission_add(user=admin, principal=world["alice"], role=role, obj=world["web"])
    assert client_for(world["alice"]).get(reverse("vms:list")).status_code == 200
    # Not where their administrative role does not reach.
    with pytest.raises(ActionRefused):
        services.permission_add(
            user=admin, principal=world["alice"], role=role, obj=world["elsewhere"]
        )


def test_view_alone_does_not_open_permissions_windows(world):
    """PowerUserRole on the data center (view on everything in it) used to read who holds
    which role on every cluster, host, network, template and VM of it."""
    bob = world["bob"]
    grant(bob, "PowerUserRole", world["dc"])
    client = client_for(bob)
    for kind, obj in (
        ("datacenter", world["dc"]),
        ("cluster", world["cluster"]),
        ("host", world["host"]),
        ("vm", world["web"]),
        ("template", world["template"]),
    ):
        for query in ("", "?window=1"):
            url = reverse("permissions", args=[kind, obj.pk]) + query
            assert client.get(url).status_code == 404, url
    # Its own VM's window opens for a UserVmEngine, with Add; a VM of the same cluster does not.
    engine = client_for(world["engine"])
    assert engine.get(reverse("permissions", args=["vm", world["web"].pk])).status_code == 200
    assert engine.get(reverse("permissions", args=["vm", world["db"].pk])).status_code == 404
    # An administrative role reads the windows under it, without Add unless it manages them.
    network_admin = UserFactory(username="netadmin")
    grant(network_admin, "NetworkAdmin", world["dc"])
    response = client_for(network_admin).get(
        reverse("permissions", args=["cluster", world["cluster"].pk])
    )
    assert response.status_code == 200 and ">Add</button>" not in response.content.decode()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_permission_changes_are_followed_only_by_those_who_may_read_them(own_channel_prefix):
    """The Permissions windows' live topic, "perms", follows the windows' rule."""
    world = await database_sync_to_async(build_world)()
    await database_sync_to_async(grant)(world["bob"], "PowerUserRole", world["dc"])
    for user, allowed in ((world["bob"], False), (world["engine"], True)):
        communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
        communicator.scope["user"] = user
        assert (await communicator.connect())[0]
        await communicator.send_json_to({"subscribe": ["perms"]})
        reply = await communicator.receive_json_from(timeout=5)
        assert reply == (
            {"subscribed": ["perms"], "refused": []}
            if allowed
            else {"subscribed": [], "refused": ["perms"]}
        ), user
        await communicator.disconnect()


def test_permissions_buttons_only_where_the_window_opens(world):
    from vms.models import Network

    network = Network.objects.create(name="paris-net", data_center=world["dc"])
    admin = UserFactory(username="netadmin")
    grant(admin, "NetworkAdmin", network)
    grant(admin, "PowerUserRole", world["dc"])  # sees all of it, administers nothing above
    client = client_for(admin)
    page = client.get(reverse("vms:datacenters")).content.decode()
    assert reverse("permissions", args=["network", network.pk]) in page
    assert reverse("permissions", args=["datacenter", world["dc"].pk]) not in page
    assert reverse("permissions", args=["cluster", world["cluster"].pk]) not in page
    assert "paris-1" in page  # the cluster is listed, without its Permissions button
    pane = client.get(reverse("vms:details", args=[world["web"].pk, "permissions"]), headers=HX)
    body = pane.content.decode()
    assert "Permissions are shown to those who" in body
    assert reverse("permissions", args=["vm", world["web"].pk]) not in body
