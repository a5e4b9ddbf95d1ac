"""Setting up from the browser: a new data center and a cluster in it, made with the tabs'
New windows, appear on the open pages through their live topics; a refused Remove says what
is in the way, and Remove takes them away again."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_create_a_data_center_and_a_cluster(admin_page, console_errors):
    page = admin_page
    page.goto("/vms/datacenters/")
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))
    page.locator("#datacenter-toolbar").get_by_role("button", name="New").click()
    window = page.locator("#modal")
    expect(window.locator("h2")).to_have_text("New Data Center")
    window.get_by_label("Name").fill("Lab")
    window.get_by_label("Description").fill("the lab")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Data center Lab created.")
    expect(window).to_be_hidden()
    expect(page.locator(".dc-head h2")).to_have_text(["Lab"])  # the live refresh

    page.goto("/vms/clusters/")
    page.locator("#cluster-toolbar").get_by_role("button", name="New").click()
    expect(window.locator("h2")).to_have_text("New Cluster")
    window.get_by_label("Data Center").select_option(label="Lab")
    window.get_by_label("Name").fill("prod")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Cluster prod created.")
    row = page.locator("#cluster-results tbody tr", has_text="prod")
    expect(row).to_contain_text("Lab")

    page.goto("/vms/datacenters/")
    block = page.locator(".dc-block", has_text="Lab")
    expect(block.locator("tbody")).to_contain_text("prod")
    block.get_by_role("button", name="Remove").click()
    expect(window.locator("h2")).to_have_text("Remove Data Center(s)")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text(
        "Cannot remove data center Lab: it still holds clusters (prod). Remove them first."
    )

    page.goto("/vms/clusters/")
    page.locator("#cluster-results tbody tr", has_text="prod").get_by_role(
        "button", name="Remove"
    ).click()
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Cluster prod removed.")
    expect(page.locator("#cluster-results tbody tr.empty")).to_have_text("No clusters.")
