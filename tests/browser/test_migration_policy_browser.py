"""Migration policies in headless Chromium: Edit Cluster's Migration Policy tab sets the
cluster's policy, Edit VM's Host tab a custom downtime, and the VM's General sub-tab shows
each effective value with where it came from."""

import os

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    if os.environ.get("VIREO_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["VIREO_SHOTS"], name), full_page=True)


def test_cluster_and_vm_migration_settings_show_with_their_source(admin_page, inventory):
    page = admin_page
    window = page.locator("#modal-content")
    page.goto("/vms/clusters/")
    page.locator("#cluster-results tbody tr", has_text="Production").get_by_role(
        "button", name="Edit"
    ).click()
    window.locator("label.side-tab", has_text="Migration Policy").click()
    window.locator("select[name=migration_policy]").select_option("Post-copy migration")
    shot(page, "cluster-migration-policy.png")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Cluster Production saved.")

    vm = inventory.vms["batch-01"]
    page.goto(f"/vms/?selected={vm.pk}")
    page.locator("#vm-details button.edit-vm").click()
    window.locator("label.side-tab", has_text="Host").click()
    downtime = window.get_by_label("Use custom migration downtime (ms)")
    downtime.fill("70000")
    window.get_by_role("button", name="OK").click()
    expect(window).to_contain_text("Migration downtime must be between 1 and 60,000 ms.")
    window.locator("label.side-tab", has_text="Host").click()
    window.get_by_label("Use custom migration downtime (ms)").fill("250")
    shot(page, "vm-host-tab.png")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("VM batch-01 saved.")

    block = page.locator("#vm-details dl.migration-props")
    expect(block).to_contain_text("Post-copy migration (cluster Production)")
    expect(block).to_contain_text("250 ms (VM)")
    expect(block).to_contain_text("Auto Converge")
    shot(page, "vm-general-migration.png")
