"""The User Portal: a user's own VM cards, their actions and New VM. (Split out of
test_accounts_views.py.)"""

from accounts_views_support import card_buttons, card_ids, client_for, messages
from django.urls import reverse
from factories import (
    UserFactory,
    grant,
)
from helpers import HX

from accounts.models import System
from accounts.permissions import can, object_permissions
from vms.models import VirtualMachine

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
    # UserRole: no Remove and no Edit (it holds neither role action).
    assert card_buttons(portal, world["web"]) == {
        "run": True,
        "shutdown": False,
        "suspend": False,
        "reboot": False,
        "run_once": True,
        "change_cd": True,
        "poweroff": False,
        "console": False,
    }
    assert card_buttons(portal, world["db"]) == {
        "run": False,
        "shutdown": True,
        "suspend": True,
        "reboot": True,
        "run_once": False,
        "change_cd": True,
        "poweroff": True,
        "console": True,
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
