"""Small UI behaviour only a browser shows: Enter in the Add Permission window's search box
searches (and does not submit the window), the sort survives a reload, and the search box's
oVirt syntax filters the list and says what is wrong with a bad query."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def names(page) -> list[str]:
    return page.locator("#vm-table tr.vm-row").evaluate_all("rows => rows.map(r => r.dataset.name)")


def test_enter_in_add_permission_search_searches(portal, console_errors):
    from factories import UserFactory

    UserFactory(username="carol")
    page = portal.page
    page.locator("#vm-table tr.vm-row[data-name='web-01'] td.status").click()
    page.locator("#vm-details nav").get_by_text("Permissions").click()
    page.locator("#vm-details .permissions").get_by_role("button", name="Add").click()
    window = page.locator("#modal")
    expect(window.locator("h2")).to_have_text("Add Permission to User")
    search = window.get_by_label("Search")
    search.fill("caro")
    search.press("Enter")
    expect(window.locator("table.picker")).to_contain_text("carol")
    expect(window).to_be_visible()  # still open: Enter did not press OK
    expect(window.locator("p.error")).to_have_count(0)  # no "Tick at least one user or group"
    expect(page.locator("#messages .msg")).to_have_count(0)


def test_sort_survives_a_reload(portal, console_errors):
    page = portal.page
    page.locator("#vm-table th a", has_text="Name").click()  # name descending
    expect(page.locator("#vm-table th.desc")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/vms/\?sort=-name$"))
    before = names(page)
    assert before == sorted(before, reverse=True)
    page.reload()
    expect(page.locator("#vm-table th.desc a")).to_have_text("Name")
    assert names(page) == before
    # Selecting a VM keeps the sort in the address too.
    page.locator(f"#vm-table tr.vm-row[data-name='{before[0]}'] td.status").click()
    expect(page).to_have_url(re.compile(r"sort=-name&selected=\d+$"))


def test_search_box_speaks_ovirt(portal, console_errors):
    page = portal.page
    box = page.locator("#vm-toolbar input[name=q]")
    box.fill("Vms: name = web* and status = up")
    expect(page.locator("#vm-table tr.vm-row")).to_have_count(2)
    assert names(page) == ["web-01", "web-02"]
    box.fill("status = sleepy")
    expect(page.locator("#vm-results .search-error")).to_contain_text("There is no status 'sleepy'")
    expect(page.locator("#vm-table tr.vm-row")).to_have_count(0)
    page.reload()  # the query stays in the address bar, message and all
    expect(page.locator("#vm-results .search-error")).to_contain_text("There is no status")
