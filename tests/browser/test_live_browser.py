"""Live updates in headless Chromium: what a change refreshes, a grant reaching an open User
Portal, a card action that a live refresh must not orphan, a change heard while a card is
being fetched, and logout ending other tabs' sockets."""

import re
import threading
import time

import pytest
from playwright.sync_api import expect

from portal.kernel import live

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "live-suite-secret"
LIVE = 5_000  # ms a live update may take to show


def send_now(*topics: str) -> None:
    """portal.kernel.live.send_now from a thread of its own (Playwright runs an event loop here, as
    daphne's threads do not)."""
    thread = threading.Thread(target=live.send_now, args=topics)
    thread.start()
    thread.join(10)


def wait_subscribed(page, topic: str) -> None:
    page.wait_for_function(
        "t => window.__wsLog.some(m => m.subscribed && m.subscribed.includes(t))", arg=topic
    )


def log_in(page, user) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("User Name").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log In").click()


def test_a_row_change_refreshes_the_row_not_the_table(inventory, admin_page, console_errors):
    """The row's vireo:changed used to bubble to #vm-results: every change re-rendered the
    whole page of rows in every tab."""
    page = admin_page
    vm = inventory.vms["web-01"]
    wait_subscribed(page, f"vm.{vm.pk}")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    send_now(f"vm.{vm.pk}")
    with page.expect_response(re.compile(rf"/vms/{vm.pk}/row/")):
        pass
    page.wait_for_timeout(800)  # the table's own trigger waits 200 ms
    assert [u for u in asked if "/vms/table/" in u] == []
    assert len([u for u in asked if f"/vms/{vm.pk}/row/" in u]) == 1
    # A change of the list itself still refreshes the table.
    with page.expect_response(re.compile(r"/vms/table/")):
        send_now("vms")


def test_a_grant_shows_in_the_open_user_portal(page, inventory, admin_user, console_errors):
    from factories import UserFactory

    from accounts.models import Role
    from accounts.services import permission_add

    vm = inventory.vms["batch-01"]
    user = UserFactory(username="newcomer", password=PASSWORD)
    log_in(page, user)
    expect(page).to_have_url(re.compile(r"/user/$"))
    expect(page.locator(".cards .card")).to_have_count(0)
    wait_subscribed(page, "grants")
    page.evaluate("window.__notReloaded = true")

    started = time.monotonic()
    permission_add(user=admin_user, principal=user, role=Role.objects.get(name="UserRole"), obj=vm)
    card = page.locator(f"#vm-card-{vm.pk}")
    expect(card.locator("h3")).to_have_text("batch-01", timeout=LIVE)
    shown = time.monotonic() - started
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
    # The page now follows the VM it was given (refused before the grant).
    wait_subscribed(page, f"vm.{vm.pk}")
    print(f"grant shown after {shown:.2f} s")


def test_a_live_refresh_waits_for_the_cards_request(page, inventory, console_errors):
    """A refresh that swapped a card while its button's request was in flight orphaned the
    request: htmx:targetError "Invalid re-target #messages" and no confirmation."""
    from factories import UserFactory, grant

    vm = inventory.vms["batch-02"]
    user = UserFactory(username="card-user", password=PASSWORD)
    grant(user, "UserRole", vm)
    log_in(page, user)
    expect(page).to_have_url(re.compile(r"/user/$"))
    wait_subscribed(page, f"vm.{vm.pk}")

    held = []
    page.route(re.compile(r"/vms/action/run/"), lambda route: held.append(route))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(f"{r.method} {r.url}"))
    page.locator(f"#vm-card-{vm.pk} button[data-card-action=run]").click()
    page.wait_for_function("() => document.querySelector('.htmx-request') !== null")
    while not held:
        page.wait_for_timeout(20)
    send_now(f"vm.{vm.pk}")  # the VM changed while its Run is in flight
    page.wait_for_timeout(700)
    card_url = f"/user/vms/{vm.pk}/card/"
    assert not [a for a in asked if card_url in a], "the card was refreshed mid-request"
    with page.expect_response(re.compile(re.escape(card_url))):
        held[0].continue_()
        expect(page.locator("#messages")).to_contain_text("Run: batch-02 requested.")
    page.unroute(re.compile(r"/vms/action/run/"))


def test_an_answer_for_messages_lands_when_its_button_was_swapped_out(
    page, inventory, console_errors
):
    """A button swapped out of the page while its request was in flight (a pane refresh that had
    set off before the click) had its answer dropped: htmx looked for #messages inside the
    detached element ("Invalid re-target #messages"). The answer lands, with no page error."""
    from factories import UserFactory, grant

    vm = inventory.vms["golden"]
    user = UserFactory(username="swap-user", password=PASSWORD)
    grant(user, "UserRole", vm)
    log_in(page, user)
    expect(page).to_have_url(re.compile(r"/user/$"))
    held = []
    page.route(re.compile(r"/vms/action/run/"), lambda route: held.append(route))
    page.locator(f"#vm-card-{vm.pk} button[data-card-action=run]").click()
    while not held:
        page.wait_for_timeout(20)
    # The card is replaced by a copy while Run is in flight: the button that asked is detached.
    page.evaluate(
        f"() => {{ const c = document.getElementById('vm-card-{vm.pk}'); c.outerHTML = c.outerHTML; }}"
    )
    held[0].continue_()
    expect(page.locator("#messages")).to_contain_text("Run: golden requested.")
    page.unroute(re.compile(r"/vms/action/run/"))


def test_a_change_heard_while_the_card_is_fetched_is_fetched_again(page, inventory, console_errors):
    """A change heard while the card's refresh was in flight was fetched again only in theory:
    the new refresh was set off on the card just swapped in, before htmx had processed it (it
    does so when the swap settles, 20 ms later), so nothing heard it and the card kept the
    older answer (a card left Powering Up after its Run had ended)."""
    from factories import UserFactory, grant

    from vms.choices import VMStatus
    from vms.models import VirtualMachine

    vm = inventory.vms["batch-01"]
    user = UserFactory(username="card-user", password=PASSWORD)
    grant(user, "UserRole", vm)
    log_in(page, user)
    expect(page).to_have_url(re.compile(r"/user/$"))
    badge = page.locator(f"#vm-card-{vm.pk} .status-badge")
    expect(badge).to_have_text("Down")
    wait_subscribed(page, f"vm.{vm.pk}")

    card_url = re.compile(rf"/user/vms/{vm.pk}/card/")
    held = []  # (route, the answer fetched at once, given to the page later)

    def hold_first(route):
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))

    page.route(card_url, hold_first)
    send_now(f"vm.{vm.pk}")
    while not held:
        page.wait_for_timeout(20)
    # The VM changes while the refresh, answered "Down", is on its way back.
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.UP)
    send_now(f"vm.{vm.pk}")
    page.wait_for_function(
        "t => window.__wsLog.filter(m => m.topic === t).length === 2", arg=f"vm.{vm.pk}"
    )
    route, answer = held[0]
    route.fulfill(response=answer)
    expect(badge).to_have_text("Up", timeout=LIVE)
    page.unroute(card_url)


def test_logout_ends_the_sessions_other_tabs(inventory, admin_page, console_errors):
    other = admin_page.context.new_page()
    other.goto("/vms/")
    expect(other.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))
    wait_subscribed(other, "vms")

    admin_page.get_by_role("button", name="Sign Out").click()
    expect(admin_page).to_have_url(re.compile(r"/login/"))
    # The other tab's socket is closed by the server and the tab shows the login page.
    other.wait_for_function("window.__wsLog.some(m => m.close === 4401)", timeout=LIVE)
    expect(other).to_have_url(re.compile(r"/login/"), timeout=LIVE)
    other.close()
    # The sign-out page's socket may have been refused while the page was leaving.
    console_errors[:] = [e for e in console_errors if "WebSocket" not in e]
