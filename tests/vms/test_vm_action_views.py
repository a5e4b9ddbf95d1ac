"""Virtual Machines tab views: the action windows (GET), the action POSTs and Clone VM.
(Split out of test_vm_views.py.)"""

import re

import pytest
from django.test import Client
from django.urls import reverse
from factories import (
    ClusterFactory,
    DiskFactory,
    HostFactory,
    SuperUserFactory,
    VMFactory,
)
from helpers import HX, assert_messages, html_one
from vm_views_support import S, action_url

from portal.kernel.models import Event, Job, JobStatus
from storage.choices import DiskStatus
from vms.choices import HostStatus
from vms.models import VirtualMachine

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
