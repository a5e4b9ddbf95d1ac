"""Roles in headless Chromium: who lands where after the real login form, and what each sees.

A ClusterAdmin of one cluster gets the Administration Portal with that cluster's VMs only; a
UserRole holder on one VM gets the User Portal with that VM's card, runs it and watches the
card follow the job live, and is turned away from the Administration Portal."""

import re
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from vms import testhosts
from vms.choices import VMStatus
from vms.models import VirtualMachine

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "roles-suite-secret"
LIVE = 10_000  # ms a live update may take to show


@pytest.fixture
def inventory(transactional_db):
    """One data center with two clusters, Alpha and Beta, each with a test-driver host and
    VMs of its own. Committed, so daphne sees it. (Overrides the conftest's inventory, so the
    conftest's `monitor` watches these hosts.)"""
    from factories import (
        ClusterFactory,
        DataCenterFactory,
        DiskFactory,
        HostFactory,
        StorageDomainFactory,
        VMFactory,
    )

    dc = DataCenterFactory(name="Default")
    StorageDomainFactory(name="data1", data_center=dc)
    alpha = ClusterFactory(name="Alpha", data_center=dc)
    beta = ClusterFactory(name="Beta", data_center=dc)
    hosts = {
        alpha: HostFactory(name="hv-alpha", cluster=alpha),
        beta: HostFactory(name="hv-beta", cluster=beta),
    }
    vms = {}
    for name, cluster, status in [
        ("alpha-web", alpha, VMStatus.UP),
        ("alpha-db", alpha, VMStatus.UP),
        ("alpha-batch", alpha, VMStatus.DOWN),
        ("beta-web", beta, VMStatus.UP),
        ("beta-desk", beta, VMStatus.DOWN),
    ]:
        vm = VMFactory(name=name, host=hosts[cluster], status=status)
        DiskFactory(vm=vm, alias=f"{name}_Disk1")
        vms[name] = vm
    for host in hosts.values():
        testhosts.node_file_write(host)
    # `host` is the one the conftest's monitor waits for: the User Portal's VM runs there.
    return SimpleNamespace(dc=dc, alpha=alpha, beta=beta, host=hosts[beta], vms=vms)


def user_with(role_name: str, obj, username: str):
    from factories import UserFactory, grant

    user = UserFactory(username=username, password=PASSWORD)
    grant(user, role_name, obj)
    return user


def log_in(page, user) -> None:
    """Through the real login form, from the front door."""
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("User Name").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log In").click()


def vm_names(page):
    return page.locator("#vm-table tr.vm-row td.name")


def test_cluster_admin_sees_only_the_vms_of_the_cluster(page, inventory, console_errors):
    user = user_with("ClusterAdmin", inventory.alpha, "alpha-admin")
    log_in(page, user)
    expect(page).to_have_url(re.compile(r"/vms/$"))
    expect(page.locator(".masthead .brand small")).to_have_text("Administration Portal")
    expect(page.locator("nav.main-tabs a.active")).to_have_text("Virtual Machines")
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))

    expect(vm_names(page)).to_have_text(["alpha-batch", "alpha-db", "alpha-web"])
    for tr in page.locator("#vm-table tr.vm-row").all():
        expect(tr.locator("td").nth(3)).to_have_text("Alpha")
    # Live updates for the list: subscribed, nothing refused.
    page.wait_for_function("window.__wsLog.some(m => m.subscribed && m.subscribed.includes('vms'))")
    assert page.evaluate("window.__wsLog.flatMap(m => m.refused || [])") == []

    # Searching for Beta's VMs finds nothing; Beta's VM's own URL is a 404, not a 403.
    page.locator("#vm-toolbar input[name=q]").fill("beta")
    expect(page.locator("#vm-table tr.vm-row")).to_have_count(0)
    beta_url = f"/vms/{inventory.vms['beta-web'].pk}/"
    assert page.request.get(beta_url).status == 404
    console_errors[:] = [e for e in console_errors if beta_url not in e]


def test_user_role_runs_its_vm_in_the_user_portal(page, inventory, monitor, console_errors):
    vm = inventory.vms["beta-desk"]
    user = user_with("UserRole", vm, "desk-user")
    log_in(page, user)
    expect(page).to_have_url(re.compile(r"/user/$"))
    expect(page.locator(".masthead .brand small")).to_have_text("User Portal")
    expect(page.locator("nav.main-tabs")).to_have_count(0)
    page.evaluate("window.__notReloaded = true")

    cards = page.locator(".cards .card")
    expect(cards).to_have_count(1)
    card = page.locator(f"#vm-card-{vm.pk}")
    expect(card.locator("h3")).to_have_text("beta-desk")
    badge = card.locator(".status-badge")
    expect(badge).to_have_text("Down")
    expect(card.locator("button[data-card-action=shutdown]")).to_be_disabled()
    # Run only once the page follows the VM, so the job's end cannot slip past it.
    page.wait_for_function(
        "t => window.__wsLog.some(m => m.subscribed && m.subscribed.includes(t))",
        arg=f"vm.{vm.pk}",
    )
    run = card.locator("button[data-card-action=run]")
    expect(run).to_be_enabled()
    run.click()
    expect(page.locator("#messages")).to_contain_text("Run: beta-desk requested.")
    expect(badge).to_have_text("Up", timeout=LIVE)
    expect(card.locator("button[data-card-action=run]")).to_be_disabled()
    expect(card.locator("button[data-card-action=shutdown]")).to_be_enabled()
    expect(cards).to_have_count(1)
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.UP

    # The Administration Portal turns the user away, with the way back.
    response = page.goto("/vms/")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("The Administration Portal is for administrators")
    expect(page.get_by_role("link", name="Go to the User Portal")).to_be_visible()
    console_errors[:] = [e for e in console_errors if "/vms/" not in e]
