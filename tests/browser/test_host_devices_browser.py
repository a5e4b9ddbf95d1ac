"""Host devices in headless Chromium: a VM's Host Devices sub-tab, the Add Host Devices window
(Pinned Host, Capability, a device moved across with the arrow, OK), the device listed, and
Pin to another host refused while it is attached, then Remove device."""

import os
import time

import pytest
from factories import HostFactory
from playwright.sync_api import expect

from vms.models import HostDevice, VirtualMachine

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    if os.environ.get("VIREO_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["VIREO_SHOTS"], name), full_page=True)


def test_add_a_host_device_then_pin_to_another_host_is_refused(portal):
    page, host = portal.page, portal.host
    HostFactory(name="hv-02", cluster=portal.cluster)
    deadline = time.monotonic() + 10
    while not HostDevice.objects.filter(host=host).exists():  # the monitor's first read
        assert time.monotonic() < deadline, "the monitor did not read the host's devices"
        time.sleep(0.1)
    vm = portal.vms["batch-01"]
    page.goto(f"/vms/?selected={vm.pk}")
    page.locator("#vm-details nav.sub-tabs a", has_text="Host Devices").click()
    expect(page.locator(".hostdev-list")).to_contain_text("No host devices attached.")
    page.get_by_role("button", name="Add device").click()
    window = page.locator("#modal-content")
    expect(window).to_contain_text("Add Host Devices")
    expect(window.locator(".hostdev-warning")).to_contain_text("turns off its migration")
    expect(window.get_by_label("Pinned Host")).to_have_value(str(host.pk))
    window.get_by_label("Capability").select_option("usb_device")
    expect(window.locator(".hostdev-available")).to_contain_text("FT232 Serial (UART) IC")
    window.get_by_label("Select usb_1_3").check()
    window.get_by_role("button", name="→").click()
    expect(window.locator(".hostdev-chosen")).to_contain_text("usb_1_3")
    expect(window.locator(".hostdev-available")).not_to_contain_text("usb_1_3")
    shot(page, "hostdev-add.png")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Attached 1 host device(s) of hv-01")
    listed = page.locator(".hostdev-list")
    expect(listed).to_contain_text("usb_1_3")
    expect(listed).to_contain_text("Future Technology Devices International")
    expect(page.locator(".hostdev-pinned")).to_contain_text("Pinned to host hv-01")
    shot(page, "hostdev-subtab.png")

    page.get_by_role("button", name="Pin to another host").click()
    expect(window).to_contain_text("Pin VM to Host")
    window.get_by_label("Host").select_option(label="hv-02")
    window.get_by_role("button", name="OK").click()
    expect(window.locator("p.error")).to_contain_text(
        "cannot be pinned to another host while they are"
    )
    shot(page, "hostdev-pin-refused.png")
    vm.refresh_from_db()
    assert vm.start_host_id == host.pk
    assert VirtualMachine.objects.get(pk=vm.pk).host_devices.count() == 1

    window.get_by_role("button", name="Cancel").click()
    page.get_by_label("Select usb_1_3").check()
    page.get_by_role("button", name="Remove device").click()
    expect(window).to_contain_text("Remove Host Device(s)")
    expect(window).to_contain_text("usb_1_3")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Removed 1 host device(s) from batch-01.")
    expect(listed).to_contain_text("No host devices attached.")
