"""Run Once and Change CD in headless Chromium: the windows open from the toolbar and the
right-click menu, list the guest tools ISO first, and the rows and the details pane follow.
Screenshots of the windows go to test-results/ (look at them)."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from storage.choices import DomainFunction, PoolStatus
from storage.models import IsoImage, StorageDomain, StorageDomainHost
from vms import testhosts
from vms.models import VirtualMachine

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RESULTS_DIR = Path(__file__).resolve().parents[2] / "test-results"
LIVE = 10_000


@pytest.fixture
def isos(inventory):
    """An Active ISO domain of the data center, on the host, with the guest tools ISO and an
    installer (before the monitor connects, so the host holds their volumes)."""
    domain = StorageDomain.objects.create(
        name="iso1",
        data_center=inventory.dc,
        domain_function=DomainFunction.ISO,
        pool_name="iso1",
        status="active",
    )
    StorageDomainHost.objects.create(domain=domain, host=inventory.host, status=PoolStatus.ACTIVE)
    images = {
        "tools": IsoImage.objects.create(
            domain=domain, name="virtio-win.iso", size_bytes=2**20, guest_tools=True
        ),
        "installer": IsoImage.objects.create(domain=domain, name="debian.iso", size_bytes=2**20),
    }
    testhosts.node_file_write(inventory.host)
    return images


def row(page, name):
    return page.locator(f"#vm-table tr.vm-row[data-name='{name}']")


def dialog(page):
    return page.locator("#modal")


def test_change_cd_and_run_once_through_their_windows(isos, portal, console_errors):
    page = portal.page
    RESULTS_DIR.mkdir(exist_ok=True)
    row(page, "web-01").locator("td.status").click()
    row(page, "web-01").locator("td.status").click(button="right")
    page.locator("#context-menu li[data-action=change_cd]").click()
    expect(dialog(page).locator("h2")).to_have_text("Change CD")
    options = dialog(page).locator("select[name=cd_image] option")
    expect(options).to_have_text(["[Eject]", "virtio-win.iso (guest tools)", "debian.iso"])
    page.screenshot(path=RESULTS_DIR / "change-cd-window.png")
    dialog(page).get_by_role("button", name="OK").click()
    expect(dialog(page)).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text(
        "Change CD: image virtio-win.iso on web-01 requested."
    )
    expect(page.locator("#vm-details .attached-cd")).to_have_text("virtio-win.iso", timeout=LIVE)
    assert VirtualMachine.objects.get(name="web-01").cd_image == isos["tools"]

    row(page, "batch-01").locator("td.status").click()
    page.locator("#vm-toolbar button[data-action=run_once]").click()
    expect(dialog(page).locator("h2")).to_have_text("Run Virtual Machine(s)")
    dialog(page).get_by_label("Attach CD").select_option(label="debian.iso")
    dialog(page).get_by_label("Boot Sequence").select_option(
        label="CD-ROM, Hard Disk, Network (PXE)"
    )
    page.screenshot(path=RESULTS_DIR / "run-once-window.png")
    dialog(page).get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Run Once: batch-01 requested")
    expect(row(page, "batch-01").locator("td.status .status-badge")).to_have_text(
        "Up", timeout=LIVE
    )
    # For this start only: the saved Boot Options stay.
    expect(page.locator("#vm-details .attached-cd")).to_have_text("—")

    page.locator("#vm-details").get_by_role("button", name="Edit").click()
    expect(dialog(page).locator("h2")).to_contain_text("Edit Virtual Machine")
    dialog(page).locator("label.side-tab", has_text="Boot Options").click()
    expect(dialog(page).get_by_label("First Device")).to_be_visible()
    page.screenshot(path=RESULTS_DIR / "edit-vm-boot-options.png")
