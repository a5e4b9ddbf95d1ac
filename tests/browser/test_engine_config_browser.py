"""Configure > Engine Configuration in headless Chromium: a SuperUser edits a key in its
window and the table shows the new value when the window closes."""

import os

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_superuser_edits_an_engine_config_key(admin_page):
    page = admin_page
    page.goto("/configure/?tab=engine")
    row = page.locator("table.grid tr", has_text="MaxNumberOfConcurrentMigrations")
    expect(row.locator("td").nth(1)).to_have_text("2")
    row.get_by_role("button", name="Edit").click()
    dialog = page.locator("#modal-content")
    expect(dialog).to_contain_text("Edit Engine Configuration")
    field = dialog.get_by_label("MaxNumberOfConcurrentMigrations")
    field.fill("40")
    dialog.get_by_role("button", name="OK").click()
    if os.environ.get("VIREO_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["VIREO_SHOTS"], "engine-error.png"))
    expect(dialog).to_contain_text("less than or equal to 32")
    field = dialog.get_by_label("MaxNumberOfConcurrentMigrations")
    field.fill("4")
    dialog.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("MaxNumberOfConcurrentMigrations set to 4.")
    expect(row.locator("td").nth(1)).to_have_text("4")
    if os.environ.get("VIREO_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["VIREO_SHOTS"], "engine.png"), full_page=True)
