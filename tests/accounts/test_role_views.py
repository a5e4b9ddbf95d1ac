"""Configure: Roles and System Permissions, and who may hand out an administrative role or read
a Permissions window. (Split out of test_accounts_views.py.)"""

import pytest
from accounts_views_support import (
    build_world,
    client_for,
    messages,
    permission_rows,
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
from helpers import HX, html_find, html_text

from accounts import services
from accounts.models import Role, System
from accounts.permissions import actions_on, holds_admin_role, object_permissions
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event
from portal.shell.consumers import LiveConsumer

# -- Configure: Roles and System Permissions --------------------------------------------------


def role_rows(response) -> dict[str, str]:
    """Role name -> the text of its row's buttons on the Roles list."""
    rows = {}
    for row in html_find(response, "tr"):
        cells = row.findall("td")
        if row.attrib or not cells:
            continue
        name = html_text(cells[0]).replace("(built-in)", "").strip()
        rows[name] = " ".join(button.text or "" for button in html_find(row, "button"))
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
    kind, row = row_id_of(world["web"], world["alice"])
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
