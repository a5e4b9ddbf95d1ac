"""Helpers shared by the modules split out of test_vm_views.py."""

from django.urls import reverse
from helpers import html_find

from vms.choices import VMStatus

MISSING = 999_999_999
S = VMStatus

# Measured, the same for 5 and for 60 VMs: session, user, count, the page of VMs (host and
# cluster joined), the active jobs of the page, whether New VM is offered.
VM_LIST_QUERIES = 6


def names_in(response) -> list[str]:
    """The VM names of the results list's rows, top to bottom."""
    return [row.get("data-name") for row in html_find(response, "tr.vm-row[id^=vm-row-][data-vm]")]


def row_actions(response) -> dict[str, set[str]]:
    return {
        row.get("data-name"): set(row.get("data-actions").split())
        for row in html_find(response, "[data-name][data-actions]")
    }


def action_url(action: str, *vms) -> str:
    return reverse("vms:action", args=[action]) + "?" + "&".join(f"vm={vm.pk}" for vm in vms)


EXPECTED_ACTIONS = {
    S.UP: {"shutdown", "poweroff", "suspend", "reboot", "change_cd", "migrate", "console"},
    S.DOWN: {"run", "run_once", "change_cd", "remove", "clone"},
    S.SUSPENDED: {"run"},
    S.PAUSED: {"run", "shutdown", "poweroff", "change_cd", "console", "migrate"},
    S.POWERING_UP: {"poweroff", "console"},
    S.POWERING_DOWN: {"poweroff", "console"},
    S.REBOOT_IN_PROGRESS: {"shutdown", "poweroff", "console"},
    S.NOT_RESPONDING: {"poweroff", "console"},
    S.SAVING_STATE: set(),
    S.RESTORING_STATE: set(),
    S.IMAGE_LOCKED: set(),
    S.UNKNOWN: set(),
    S.MIGRATING_FROM: {"cancel_migration"},
    S.MIGRATING_TO: set(),
}
