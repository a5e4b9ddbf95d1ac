"""Affinity groups in headless Chromium: New Affinity Group from the cluster's Affinity Groups
sub-tab, the group shown there and on the VM's sub-tab, then Run and Migrate refused with the
group named; Remove lets the VM run."""

import os
import re

import pytest
from playwright.sync_api import expect

from vms import testhosts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE = 10_000


def shot(page, name: str) -> None:
    if os.environ.get("VIREO_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["VIREO_SHOTS"], name), full_page=True)


@pytest.fixture
def second_host(inventory):
    """hv-02 in the cluster, its node file written before the monitor starts."""
    from factories import HostFactory

    from storage.choices import StorageType
    from storage.models import StorageDomain

    host = HostFactory(name="hv-02", cluster=inventory.cluster)
    testhosts.node_file_write(host)
    # shared storage: the VMs' disks do not keep them on hv-01
    StorageDomain.objects.filter(data_center=inventory.dc).update(storage_type=StorageType.NFS)
    return host


def goto(page, url):
    """Open a page and wait for its live updates (the websocket) to be on."""
    page.goto(url)
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))


def row(page, name):
    return page.locator(f"#vm-table tr.vm-row[data-name='{name}']")


def select_vm(page, name):
    row(page, name).locator("td.status").click()
    expect(page.locator("#vm-table tr.vm-row.selected")).to_have_count(1)


def new_group(page, name, rule, vms, host_rule=None, hosts=()):
    window = page.locator("#modal-content")
    page.locator("#affinity-groups .affinity-toolbar").get_by_role("button", name="New").click()
    window.get_by_label("Name", exact=True).fill(name)
    window.locator("select[name=vm_rule]").select_option(rule)
    expect(window.get_by_label("Enforcing (VM Affinity Rule)")).to_be_checked()
    window.locator("select[name=vms]").select_option(vms)
    if host_rule:
        window.locator("select[name=host_rule]").select_option(host_rule)
        window.get_by_label("Enforcing (VM to host rule)").check()
        window.locator("select[name=hosts]").select_option(list(hosts))
    shot(page, f"affinity-new-{name}.png")
    window.get_by_role("button", name="OK").click()


def test_groups_made_in_the_cluster_sub_tab_refuse_run_and_migrate(
    second_host, portal, console_errors
):
    page = portal.page
    goto(page, "/vms/clusters/")
    page.locator("#cluster-results tbody tr", has_text="Production").get_by_role(
        "link", name="Affinity Groups"
    ).click()
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))
    expect(page.locator("nav.sub-tabs a.active")).to_have_text("Affinity Groups")
    expect(page.locator("#affinity-groups")).to_contain_text("No affinity groups.")

    new_group(page, "apart", "Negative", ["web-01", "batch-01"], "Negative", ["hv-02"])
    expect(page.locator("#messages")).to_contain_text(
        "Affinity group apart created in cluster Production."
    )
    groups = page.locator("#affinity-groups table tbody")
    expect(groups).to_contain_text("apart", timeout=LIVE)  # the list follows, no reload
    expect(groups).to_contain_text(
        "Negative (Enforcing) batch-01, web-01 Negative (Enforcing) hv-02"
    )
    # a group contradicting it over the same pair is refused in the window, naming it
    new_group(page, "together-bad", "Positive", ["web-01", "batch-01"])
    expect(page.locator("#modal-content")).to_contain_text(
        "conflicts with affinity group apart (Negative), which also holds VMs batch-01 and web-01"
    )
    page.locator("#modal-content").get_by_role("button", name="Cancel").click()
    new_group(page, "together", "Positive", ["web-01", "web-02"])
    expect(page.locator("#messages")).to_contain_text(
        "Affinity group together created in cluster Production."
    )
    shot(page, "affinity-after-together.png")
    expect(groups.locator("tr")).to_have_count(2, timeout=LIVE)
    shot(page, "affinity-cluster-tab.png")

    # Run batch-01: hv-01 runs web-01, hv-02 is off limits; the group is named
    goto(page, "/vms/")
    select_vm(page, "batch-01")
    page.locator("#vm-toolbar button[data-action=run]").click()
    expect(page.locator("#messages")).to_contain_text(
        "Cannot run batch-01: on its host hv-01, affinity group apart (Negative, Enforcing): "
        "its VM web-01 runs there. No other host of cluster Production can run it: hv-02: "
        "affinity group apart (VM to host Negative, Enforcing): the group keeps its VMs off "
        "this host."
    )
    expect(row(page, "batch-01").locator("td.status")).to_contain_text("Down")
    # the VM's own Affinity Groups sub-tab lists its group
    page.locator("#vm-details nav.sub-tabs a", has_text="Affinity Groups").click()
    expect(page.locator("#vm-details table.affinity-group-list")).to_contain_text("apart")
    shot(page, "affinity-vm-sub-tab.png")

    # Migrate web-02 away from web-01: the positive group is in the way
    select_vm(page, "web-02")
    page.locator("#vm-toolbar button[data-action=migrate]").click()
    window = page.locator("#modal-content")
    expect(window).to_contain_text("No other Up host of the cluster can take it now")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text(
        "hv-02: affinity group together (Positive, Enforcing): its VMs run elsewhere "
        "(web-01 on hv-01)"
    )
    expect(row(page, "web-02").locator("td.status")).to_contain_text("Up")

    # Remove the negative group: batch-01 runs
    goto(page, f"/vms/clusters/{portal.cluster.pk}/affinity-groups/")
    page.locator("#affinity-groups tr", has_text="apart").get_by_role(
        "button", name="Remove"
    ).click()
    expect(page.locator("#modal-content")).to_contain_text("apart")
    page.locator("#modal-content").get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Affinity group apart removed.")
    goto(page, "/vms/")
    select_vm(page, "batch-01")
    page.locator("#vm-toolbar button[data-action=run]").click()
    expect(row(page, "batch-01").locator("td.status")).to_contain_text("Up", timeout=LIVE)
