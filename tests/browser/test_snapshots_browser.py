"""The Snapshots sub-tab in headless Chromium: a snapshot with memory of a running VM goes
Locked then Ok without a reload; a preview puts it in Preview Mode, and Commit ends it."""

import dataclasses
import re
import threading

import pytest
from playwright.sync_api import expect

from portal.kernel import tasks
from vms.models import Snapshot, SnapshotPreview, VirtualMachine

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
LIVE = 10_000


def _open_snapshots(page, name):
    page.locator(f"#vm-table tr.vm-row[data-name='{name}'] td.status").click()
    expect(page.locator("#vm-details h2")).to_have_text(name)
    page.locator("#vm-details nav.sub-tabs").get_by_text("Snapshots", exact=True).click()
    expect(page.locator(".snapshot-list")).to_contain_text("Active VM")


def _held(monkeypatch, request, kind):
    """Hold jobs of `kind` until released, so the page can be seen in the busy state."""
    release = threading.Event()
    request.addfinalizer(release.set)
    job_type = tasks.JOB_TYPES[kind]

    def held(job):
        release.wait(timeout=15)
        return job_type.handler(job)

    monkeypatch.setitem(tasks.JOB_TYPES, kind, dataclasses.replace(job_type, handler=held))
    return release


def test_snapshot_with_memory_locked_then_ok_then_preview_and_commit(
    portal, console_errors, monkeypatch, request
):
    page = portal.page
    page.evaluate("window.__notReloaded = true")
    release = _held(monkeypatch, request, "snapshot_create")
    _open_snapshots(page, "web-01")

    page.locator(".snapshot-toolbar").get_by_role("button", name="Create").click()
    window = page.locator("#modal")
    expect(window.locator("h2")).to_have_text("Create snapshot")
    window.get_by_label("Description").fill("before upgrade")
    expect(window.get_by_label("web-01_Disk1")).to_be_checked()
    window.get_by_label("Save Memory").check()
    window.get_by_role("button", name="OK").click()
    expect(window).to_be_hidden()

    snapshot_row = page.locator(".snapshot-row", has_text="before upgrade")
    expect(snapshot_row.locator(".status-badge")).to_have_text("Locked", timeout=LIVE)
    release.set()
    expect(snapshot_row.locator(".status-badge")).to_have_text("Ok", timeout=LIVE)
    expect(snapshot_row).to_contain_text("Yes")  # memory saved
    vm = VirtualMachine.objects.get(name="web-01")
    assert vm.status == "up" and Snapshot.objects.get(vm=vm).memory_saved

    # Preview needs the VM Down: shut it down, then preview the snapshot and commit it.
    page.locator("#vm-table tr.vm-row[data-name='web-01'] td.status").click(button="right")
    page.locator("#context-menu li[data-action=poweroff]").click()
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#vm-table tr.vm-row[data-name='web-01'] .status-badge")).to_have_text(
        "Down", timeout=LIVE
    )

    snapshot_row = page.locator(".snapshot-row", has_text="before upgrade")
    snapshot_row.click()
    expect(snapshot_row).to_have_class(re.compile(r"\bselected\b"))
    page.locator(".snapshot-toolbar").get_by_role("button", name="Preview", exact=True).click()
    expect(
        page.locator(".snapshot-row", has_text="before upgrade").locator(".status-badge")
    ).to_have_text("Preview Mode", timeout=LIVE)
    assert SnapshotPreview.objects.filter(vm=vm).exists()
    page.locator(".snapshot-toolbar").get_by_role("button", name="Commit").click()
    expect(window.locator("h2")).to_have_text("Commit Snapshot")
    window.get_by_role("button", name="OK").click()
    expect(
        page.locator(".snapshot-row", has_text="before upgrade").locator(".status-badge")
    ).to_have_text("Ok", timeout=LIVE)
    assert not SnapshotPreview.objects.filter(vm=vm).exists()
    assert page.evaluate("window.__notReloaded === true")
