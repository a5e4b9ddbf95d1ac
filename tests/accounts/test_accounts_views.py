"""The roles and permissions screens: the Permissions sub-tab and its Add and Remove windows.
Configure (Roles, System Permissions) is in test_role_views.py, the User Portal in
test_user_portal_views.py."""

import pytest
from accounts_views_support import (
    build_world,
    card_ids,
    client_for,
    messages,
    permission_rows,
    picker,
    role_options,
    row_id_of,
)
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from factories import (
    SuperUserFactory,
    UserFactory,
    grant,
)
from guardian.conf import settings as guardian_settings
from helpers import HX

from accounts import services
from accounts.models import Role, System
from accounts.permissions import can, object_permissions, restrict
from portal.kernel.errors import ActionRefused
from portal.kernel.live import send_now
from portal.kernel.models import Event
from portal.shell.consumers import LiveConsumer
from vms.models import VirtualMachine

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


async def following(user, topic: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    ok, _ = await communicator.connect()
    assert ok
    await communicator.send_json_to({"subscribe": [topic]})
    assert await communicator.receive_json_from(timeout=5) == {"subscribed": [topic], "refused": []}
    return communicator


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

    kind, row_id = await database_sync_to_async(row_id_of)(web, world["alice"])
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
    kind, row_id = await database_sync_to_async(row_id_of)(web, world["ops"])
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
    dc_kind, dc_row = row_id_of(world["dc"], dcadmin)
    inherited = reverse("permission_remove", args=["vm", world["web"].pk, dc_kind, dc_row])
    assert client.get(inherited).status_code == 404
    assert client.post(inherited).status_code == 404
    # A user without manage_permissions on the VM gets no window at all.
    kind, row = row_id_of(world["web"], world["alice"])
    own = reverse("permission_remove", args=["vm", world["web"].pk, kind, row])
    assert client_for(world["alice"]).post(own).status_code == 404
    assert can(world["alice"], "run", world["web"])
    # UserVmEngine may not take away a role it could not have given.
    boss = UserFactory(username="boss")
    grant(boss, "ClusterAdmin", world["web"])
    kind, row = row_id_of(world["web"], boss)
    url = reverse("permission_remove", args=["vm", world["web"].pk, kind, row])
    refused = client.post(url, headers=HX)
    assert messages(refused) == ["You may not remove the role ClusterAdmin."]
    assert can(boss, "edit_cluster", world["web"])
    with pytest.raises(ActionRefused, match="You may not remove permissions on Paris"):
        services.permission_remove(
            user=world["engine"], kind=dc_kind, row_id=dc_row, obj=world["dc"]
        )
