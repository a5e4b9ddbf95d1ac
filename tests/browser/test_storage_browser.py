"""The Storage tab in a browser: New Domain's fields follow the Storage Type (CSS, no script),
a bad path is shown by its field, the new domain turns Active live as its job sets the pool
up on the host, and the selected domain's toolbar and per-host pane follow its status."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
LIVE = 10_000


def test_new_local_domain_from_the_storage_tab(portal, console_errors):
    page = portal.page
    page.locator("nav.main-tabs").get_by_role("link", name="Storage").click()
    page.locator("#domain-toolbar").get_by_role("button", name="New Domain").click()
    window = page.locator("#modal")
    expect(window.locator("h2")).to_have_text("New Domain")
    path = window.get_by_label("Path", exact=True)
    server = window.get_by_label("NFS Server")
    expect(path).to_be_visible()
    expect(server).to_be_hidden()
    window.get_by_label("Storage Type").select_option("nfs")
    expect(server).to_be_visible()
    expect(window.get_by_label("Export Path")).to_be_visible()
    expect(path).to_be_hidden()
    window.get_by_label("Storage Type").select_option("local")
    expect(path).to_be_visible()

    window.get_by_label("Name", exact=True).fill("local9")
    path.fill("../etc")
    window.get_by_role("button", name="OK").click()
    expect(window.locator(".error")).to_contain_text("Path must be an absolute path")
    # The label now holds the error too: the field by its name.
    window.locator("input[name=path]").fill("/var/lib/vireo/local9")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages .msg")).to_contain_text("Adding storage domain local9.")

    row = page.locator("#domain-results tr.domain-row", has_text="local9")
    expect(row).to_contain_text("Active", timeout=LIVE)  # the job's end, pushed live
    row.click()
    expect(page.locator("#domain-results tr.domain-row.selected")).to_contain_text("local9")
    expect(page.locator("#domain-details tr[data-host='hv-01']")).to_contain_text("Active")
    toolbar = page.locator("#domain-toolbar")
    expect(toolbar.get_by_role("button", name="Remove")).to_be_disabled()
    toolbar.get_by_role("button", name="Maintenance").click()
    expect(page.locator("#modal h2")).to_have_text("Maintenance Storage Domain(s)")
    page.locator("#modal").get_by_role("button", name="OK").click()
    selected = page.locator("#domain-results tr.domain-row.selected")
    expect(selected).to_contain_text("Maintenance", timeout=LIVE)
    expect(toolbar.get_by_role("button", name="Remove")).to_be_enabled()
    expect(toolbar.get_by_role("button", name="Detach")).to_be_enabled()
    expect(page.locator("#messages .msg.error")).to_have_count(0)
    assert not [e for e in console_errors if re.search(r"storage", e)], console_errors
