"""The User Portal that a user can live in: Edit and Remove where the role gives them
(UserVmEngine, which a VM's creator holds), through the Administration Portal's own windows
and services; Shutdown and Remove ask in the styled window, never the browser's confirm()."""

from accounts_views_support import card_buttons, client_for, messages
from django.urls import reverse
from factories import UserFactory, grant
from helpers import HX, html_find, html_one

from vms.choices import VMStatus
from vms.models import VirtualMachine


def test_user_vm_engine_gets_edit_and_remove_on_its_card(world):
    portal = client_for(world["engine"]).get(reverse("user_portal"))
    buttons = card_buttons(portal, world["web"])
    assert buttons["edit"] is True and buttons["remove"] is True  # web1 is Down
    card = html_one(portal, f"#vm-card-{world['web'].pk}")
    edit = html_one(card, "button[data-card-action=edit]")
    assert edit.get("hx-get") == reverse("vms:edit", args=[world["web"].pk])
    assert edit.get("hx-target") == "#modal-content"


def test_user_role_gets_neither_edit_nor_remove_and_their_urls_are_404(world):
    alice = world["alice"]
    grant(alice, "UserRole", world["web"])
    client = client_for(alice)
    buttons = card_buttons(client.get(reverse("user_portal")), world["web"])
    assert "edit" not in buttons and "remove" not in buttons
    vm = world["web"].pk
    assert client.get(reverse("vms:edit", args=[vm]), headers=HX).status_code == 404
    remove = reverse("vms:action", args=["remove"])
    assert client.get(remove, {"vm": vm}, headers=HX).status_code == 404
    assert client.post(remove, {"vm": vm, "remove_disks": "on"}, headers=HX).status_code == 404
    assert VirtualMachine.objects.filter(pk=vm).exists()


def test_user_vm_engine_edits_through_the_edit_window(world):
    client = client_for(world["engine"])
    vm = world["web"]
    window = client.get(reverse("vms:edit", args=[vm.pk]), headers=HX)
    assert window.status_code == 200 and "Edit Virtual Machine" in window.content.decode()
    data = {"description": "mine now", "memory_mb": 2048, "vcpus": 2, "cores_per_socket": 1}
    done = client.post(reverse("vms:edit", args=[vm.pk]), data, headers=HX)
    assert messages(done) == [f"VM {vm.name} saved."]
    vm.refresh_from_db()
    assert (vm.description, vm.memory_mb, vm.vcpus) == ("mine now", 2048, 2)
    # Another VM (no role on it) is out of reach.
    other = client.get(reverse("vms:edit", args=[world["db"].pk]), headers=HX)
    assert other.status_code == 404


def test_the_creator_of_a_vm_removes_it_from_the_user_portal(world):
    creator = UserFactory(username="maker2")
    grant(creator, "UserVmEngine", world["web"])  # what creating it gives (see creator test)
    client = client_for(creator)
    vm = world["web"]
    window = client.get(reverse("vms:action", args=["remove"]), {"vm": vm.pk}, headers=HX)
    assert window.status_code == 200
    assert html_find(window, "input[name=remove_disks]"), "the Remove Disk(s) check box"
    done = client.post(
        reverse("vms:action", args=["remove"]), {"vm": vm.pk, "remove_disks": "on"}, headers=HX
    )
    assert messages(done) == [f"Remove: {vm.name} requested."]
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.IMAGE_LOCKED


def test_actions_that_ask_open_the_styled_window_not_confirm(world):
    alice = world["alice"]
    grant(alice, "UserRole", world["db"])
    portal = client_for(alice).get(reverse("user_portal"))
    body = portal.content.decode()
    assert "hx-confirm" not in body
    card = html_one(portal, f"#vm-card-{world['db'].pk}")
    shutdown = html_one(card, "button[data-card-action=shutdown]")
    assert shutdown.get("hx-get") == reverse("vms:action", args=["shutdown"]) + (
        f"?vm={world['db'].pk}"
    )
    assert shutdown.get("hx-target") == "#modal-content" and shutdown.get("hx-post") is None
    run = html_one(card, "button[data-card-action=run]")  # Run does not ask
    assert run.get("hx-post") and run.get("hx-get") is None


def test_a_live_refresh_of_a_removed_vms_card_is_answered_gone_not_404(world):
    client = client_for(world["engine"])
    url = reverse("user_vm_card", args=[world["web"].pk])
    world["web"].delete()
    quiet = client.get(url, headers={**HX, "X-Vireo-Live": "1"})
    assert quiet.status_code == 204 and quiet["X-Vireo-Gone"] == "1"
    assert client.get(url, headers=HX).status_code == 404
