"""The Scheduling Policy tab in headless Chromium: Edit Cluster sets power_saving with its
properties, a bad LowUtilization is refused in the window, and the cluster's General sub-tab
shows the policy and its properties."""

import os

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    if os.environ.get("VIREO_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["VIREO_SHOTS"], name), full_page=True)


def test_edit_cluster_sets_the_scheduling_policy_shown_on_the_general_sub_tab(
    admin_page, inventory
):
    page = admin_page
    window = page.locator("#modal-content")
    page.goto("/vms/clusters/")
    row = page.locator("#cluster-results tbody tr", has_text="Production")
    row.get_by_role("button", name="Edit").click()
    window.locator("label.side-tab", has_text="Scheduling Policy").click()
    window.locator("select[name=scheduling_policy]").select_option("power_saving")
    window.get_by_label("HighUtilization (%)").fill("70")
    window.get_by_label("LowUtilization (%)").fill("75")
    window.get_by_label("MaxFreeMemoryForOverUtilized (MB)").fill("1024")
    window.get_by_role("button", name="OK").click()
    expect(window).to_contain_text("LowUtilization (75 %) must be under HighUtilization (70 %).")
    window.locator("label.side-tab", has_text="Scheduling Policy").click()
    window.get_by_label("LowUtilization (%)").fill("10")
    window.get_by_label("CpuOverCommitDurationMinutes").fill("4")
    shot(page, "cluster-scheduling-policy.png")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Cluster Production saved.")

    page.locator("#cluster-results a.cluster-name", has_text="Production").click()
    props = page.locator("#cluster-details dl.scheduling-props")
    expect(props).to_contain_text("power_saving")
    expect(props).to_contain_text("HighUtilization70 %")
    expect(props).to_contain_text("LowUtilization10 %")
    expect(props).to_contain_text("CpuOverCommitDurationMinutes4 minutes")
    expect(props).to_contain_text("MaxFreeMemoryForOverUtilized1,024 MB")
    expect(props).to_contain_text("MinFreeMemoryForUnderUtilizednot considered")
    shot(page, "cluster-general-scheduling.png")
