"""The portal in headless Chromium with its Content-Security-Policy enforced (the other browser
tests bypass it for Playwright's own eval): logging in, the live websocket, the results list,
the details pane, the right-click menu and a window all work with no inline script and no
policy violation; Change Password from the user menu; the login lockout's message."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "security-suite-secret-7"


@pytest.fixture
def strict_page(browser, live_server_url):
    """A page that keeps the portal's Content-Security-Policy; every console error and
    uncaught exception is collected (CSP violations are reported there)."""
    context = browser.new_context(base_url=live_server_url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on(
        "console",
        lambda m: (
            m.type == "error"
            and not m.location.get("url", "").endswith("/favicon.ico")
            and page.errors.append(m.text)
        ),
    )
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    context.close()


def log_in(page, username: str, password: str) -> None:
    page.goto("/login/")
    page.get_by_label("User Name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log In").click()


def test_the_portal_works_under_its_content_security_policy(strict_page, inventory):
    from factories import SuperUserFactory

    page = strict_page
    SuperUserFactory(username="root", password=PASSWORD)
    response = page.goto("/login/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    log_in(page, "root", PASSWORD)
    expect(page).to_have_url(re.compile(r"/vms/$"))
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))  # websocket up
    rows = page.locator("#vm-table tr.vm-row")
    expect(rows).to_have_count(6)
    row = page.locator("#vm-table tr.vm-row[data-name='web-01']")
    row.locator("td.status").click()
    expect(page.locator("#vm-details h2")).to_have_text("web-01")
    row.locator("td.status").click(button="right")
    menu = page.locator("#context-menu")
    expect(menu).to_be_visible()
    menu.locator("li[data-action=shutdown]").click()
    dialog = page.locator("#modal")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text("Shut down Virtual Machine(s)")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    page.locator("#vm-details nav.sub-tabs").get_by_text("Permissions").click()
    expect(page.locator("#vm-details .permissions")).to_contain_text("root")
    assert page.errors == []


def test_change_password_from_the_user_menu(strict_page, transactional_db):
    from django.contrib.auth import get_user_model
    from factories import UserFactory

    page = strict_page
    UserFactory(username="grace", password=PASSWORD)
    log_in(page, "grace", PASSWORD)
    expect(page).to_have_url(re.compile(r"/user/$"))
    page.get_by_role("link", name="Change Password").click()
    page.get_by_label("Current Password").fill(PASSWORD)
    page.get_by_label("New Password", exact=True).fill("password")
    page.get_by_label("Confirm New Password").fill("password")
    page.get_by_role("button", name="OK").click()
    expect(page.locator(".login-box")).to_contain_text("This password is too common.")
    page.get_by_label("Current Password").fill(PASSWORD)
    page.get_by_label("New Password", exact=True).fill("a-new-long-passphrase-3")
    page.get_by_label("Confirm New Password").fill("a-new-long-passphrase-3")
    page.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Your password was changed.")
    assert get_user_model().objects.get(username="grace").check_password("a-new-long-passphrase-3")
    assert page.errors == []


def test_a_locked_out_login_says_so(strict_page, transactional_db):
    from django.conf import settings
    from factories import UserFactory

    page = strict_page
    UserFactory(username="heidi", password=PASSWORD)
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(page, "heidi", f"wrong-{n}")
    log_in(page, "heidi", PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("Too many failed logins")
    expect(page).to_have_url(re.compile(r"/login/"))
    # The 429 answers are the only errors the console shows.
    assert all("429" in e for e in page.errors), page.errors
