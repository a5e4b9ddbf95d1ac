"""The User Portal a user can live in, in headless Chromium: a UserVmEngine holder's cards show
what the guest agent reports (live, once the monitor asked), Shutdown asks in the styled
window (no browser confirm()), Edit saves through the Edit Virtual Machine window, and Remove
(with Remove Disk(s)) takes the VM away."""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from vms.choices import VMStatus
from vms.models import VirtualMachine

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "user-portal-secret"
LIVE = 10_000  # ms a live update may take to show
RESULTS_DIR = Path(__file__).resolve().parents[2] / "test-results"


def log_in(page, user) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("User Name").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log In").click()
    expect(page).to_have_url(re.compile(r"/user/$"))


def test_a_vm_engine_lives_in_the_user_portal(page, inventory, monitor, console_errors):
    from factories import UserFactory, grant

    up, down = inventory.vms["web-01"], inventory.vms["batch-01"]
    user = UserFactory(username="engine-user", password=PASSWORD)
    grant(user, "UserVmEngine", up)
    grant(user, "UserVmEngine", down)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    log_in(page, user)
    page.evaluate("window.__notReloaded = true")
    card_up, card_down = page.locator(f"#vm-card-{up.pk}"), page.locator(f"#vm-card-{down.pk}")
    page.wait_for_function(
        "t => window.__wsLog.some(m => m.subscribed && m.subscribed.includes(t))",
        arg=f"vm.{up.pk}",
    )

    # The guest agent: none asked yet, then the monitor's pass shows its report live.
    expect(card_up.locator(".guest-ips")).to_have_text("no guest agent")
    assert monitor.agents_cycle(wait=10) == 1
    expect(card_up.locator(".guest-ips")).to_contain_text("web-01host", timeout=LIVE)

    # Shutdown asks in the portal's own window; Cancel leaves the VM Up.
    card_up.locator("button[data-card-action=shutdown]").click()
    modal = page.locator("#modal")
    expect(modal).to_be_visible()
    expect(modal.locator("h2")).to_have_text("Shut down Virtual Machine(s)")
    expect(modal.locator("ul.vm-names")).to_have_text("web-01")
    RESULTS_DIR.mkdir(exist_ok=True)
    page.screenshot(path=RESULTS_DIR / "user-portal-shutdown.png", full_page=True)
    modal.get_by_role("button", name="Cancel").click()
    expect(modal).to_be_hidden()
    assert VirtualMachine.objects.get(pk=up.pk).status == VMStatus.UP

    # Edit: the Edit Virtual Machine window, saved; the card follows.
    card_down.locator("button[data-card-action=edit]").click()
    expect(modal.locator("h2")).to_have_text("Edit Virtual Machine: batch-01")
    expect(modal.locator(".sso-hint")).to_contain_text("does not log anyone in")
    modal.get_by_label("Description").fill("my build box")
    modal.get_by_role("button", name="OK").click()
    expect(modal).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text("VM batch-01 saved.")
    expect(card_down.locator("p.hint").first).to_have_text("my build box", timeout=LIVE)

    # Remove, with Remove Disk(s): the card goes once the job is done.
    card_down.locator("button[data-card-action=remove]").click()
    expect(modal.locator("h2")).to_have_text("Remove Virtual Machine(s)")
    expect(modal.get_by_label("Remove Disk(s)")).to_be_checked()
    page.screenshot(path=RESULTS_DIR / "user-portal-remove.png", full_page=True)
    modal.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Remove: batch-01 requested.")
    expect(card_down).to_have_count(0, timeout=LIVE)
    assert not VirtualMachine.objects.filter(pk=down.pk).exists()
    assert dialogs == [], "the browser's confirm() was used"
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def test_the_agents_report_arrives_live_in_the_general_sub_tab_and_the_list(portal, console_errors):
    page = portal.page
    page.evaluate("window.__notReloaded = true")
    row = page.locator("#vm-table tr.vm-row[data-name='web-01']")
    row.locator("td.status").click()
    details = page.locator("#vm-details")
    expect(details.locator("h2")).to_have_text("web-01")
    expect(details.locator("dd.guest-fqdn")).to_have_text("no guest agent")
    page.wait_for_function(
        "t => window.__wsLog.some(m => m.subscribed && m.subscribed.includes(t))",
        arg=f"vm.{portal.vms['web-01'].pk}",
    )
    assert portal.monitor.agents_cycle(wait=10) == 1
    expect(details.locator("dd.guest-fqdn")).to_have_text("web-01host", timeout=LIVE)
    expect(details.locator("dd.guest-users")).to_have_text("None")
    expect(page.locator("#vm-table thead")).to_contain_text("IP Addresses")
    RESULTS_DIR.mkdir(exist_ok=True)
    page.screenshot(path=RESULTS_DIR / "vm-general-guest-agent.png", full_page=True)
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
