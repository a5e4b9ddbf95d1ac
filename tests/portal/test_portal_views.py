"""The Events and Tasks pages, login and logout, each tried anonymous, logged in without
permission and permitted."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from factories import UserFactory, VMFactory
from helpers import HX, html_find

from portal.kernel.models import Event, Job, JobStatus, Phase, Severity

# Measured, the same for 5 and for 60 events: session, user, count, the page of events (user
# and VM joined).
EVENT_LIST_QUERIES = 4


def make_events(n: int, user=None, vm=None) -> list[Event]:
    now = timezone.now()
    return Event.objects.bulk_create(
        Event(
            created_at=now - timedelta(seconds=i),
            action="run",
            phase=Phase.REQUESTED,
            object_type="vm",
            object_name=f"vm{i:03d}",
            vm=vm,
            user=user,
            message=f"event {i:03d}",
        )
        for i in range(n)
    )


def messages_in(response) -> list[str]:
    cells = [cell.text or "" for cell in html_find(response, "td.message")]
    return [m.group(0) for m in (re.match(r"event \d+", text) for text in cells) if m]


# ---- Anonymous ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name,headers",
    [("events", {}), ("events", HX), ("jobs", {}), ("jobs", HX), ("home", {})],
)
def test_anonymous_is_sent_to_login(client, name, headers):
    response = client.get(reverse(name), headers=headers, follow=True)
    assert response.redirect_chain[-1][0].startswith(reverse("login") + "?next=")
    assert "Log in to Vireo" in response.content.decode()


# ---- Logged in without permission ---------------------------------------------------------


def test_no_role_is_refused_the_administration_portal(db):
    user_client = Client()
    user_client.force_login(UserFactory())
    vm = VMFactory()
    make_events(3, vm=vm)
    Job.objects.create(kind="vm_run", description="Run secret-vm", vm=vm)
    for headers in ({}, HX):
        for name in ("events", "jobs"):
            response = user_client.get(reverse(name), headers=headers)
            assert response.status_code == 403
            assert "secret-vm" not in response.content.decode()
            assert "The Administration Portal is for administrators" in response.content.decode()


def test_admin_of_another_cluster_sees_no_events_or_tasks(user_client, user):
    from factories import ClusterFactory, grant

    vm = VMFactory()
    make_events(3, vm=vm)
    Job.objects.create(kind="vm_run", description="Run secret-vm", vm=vm)
    grant(user, "ClusterAdmin", ClusterFactory())
    for headers in ({}, HX):
        events = user_client.get(reverse("events"), headers=headers)
        assert events.status_code == 200
        assert messages_in(events) == [] and "No events." in events.content.decode()
        jobs = user_client.get(reverse("jobs"), headers=headers)
        assert jobs.status_code == 200
        assert "secret-vm" not in jobs.content.decode()
        assert "No tasks yet." in jobs.content.decode()


# ---- Events -------------------------------------------------------------------------------


def test_events_page_lists_events(admin_client, admin):
    vm = VMFactory(name="web1")
    Event.objects.create(
        action="shutdown",
        phase=Phase.FAILED,
        severity=Severity.ERROR,
        object_type="vm",
        object_name="web1",
        vm=vm,
        user=admin,
        message="Failed to shut down VM web1.",
        reason="maintenance",
        error="guest ignored ACPI",
    )
    page = admin_client.get(reverse("events"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html and 'name="q"' in html
    row = re.search(r'<tr class="event sev-error">.*?</tr>', html, re.S).group(0)
    for text in (
        "Failed to shut down VM web1.",
        'title="Error"',
        admin.username,
        "VM web1",
        "maintenance",
        "guest ignored ACPI",
    ):
        assert text in row
    partial = admin_client.get(reverse("events"), headers=HX).content.decode()
    assert partial.startswith('<div id="event-results"') and "<html" not in partial
    assert "Failed to shut down VM web1." in partial


def test_events_newest_first_search_and_pages(admin_client, settings):
    settings.VIREO_PAGE_SIZE = 100
    make_events(130)
    first = admin_client.get(reverse("events"))
    assert messages_in(first)[:2] == ["event 000", "event 001"]
    assert len(messages_in(first)) == 100
    assert "1–100 of 130" in first.content.decode() and "page=2" in first.content.decode()
    second = admin_client.get(reverse("events"), {"page": 2}, headers=HX)
    assert messages_in(second) == [f"event {i:03d}" for i in range(100, 130)]
    searched = admin_client.get(reverse("events"), {"q": "EVENT 12"}, headers=HX)
    assert messages_in(searched) == [f"event {i:03d}" for i in range(120, 130)]
    none = admin_client.get(reverse("events"), {"q": "nothing"})
    assert "No events." in none.content.decode()


@pytest.mark.parametrize("n", [5, 60])
def test_events_run_constant_queries(
    admin_client, admin, django_assert_max_num_queries, settings, n
):
    settings.VIREO_PAGE_SIZE = 100  # every event on one page
    make_events(n, user=admin, vm=VMFactory())
    for params, headers in (({}, {}), ({}, HX), ({"q": "event 0"}, HX)):
        with django_assert_max_num_queries(EVENT_LIST_QUERIES):
            response = admin_client.get(reverse("events"), params, headers=headers)
        assert response.status_code == 200
    assert len(messages_in(admin_client.get(reverse("events")))) == n


# ---- Tasks --------------------------------------------------------------------------------


def test_tasks_page_lists_jobs(admin_client, admin):
    vm = VMFactory(name="web1")
    Job.objects.create(
        kind="vm_run",
        description="Run web1",
        vm=vm,
        user=admin,
        status=JobStatus.RUNNING,
        progress=40,
        step="Starting",
    )
    Job.objects.create(
        kind="vm_shutdown",
        description="Shutdown web1",
        vm=vm,
        status=JobStatus.FAILED,
        error="did not shut down within 5 seconds",
    )
    page = admin_client.get(reverse("jobs"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html
    for text in (
        "Run web1",
        "Running",
        "40% — Starting",
        admin.username,
        "Shutdown web1",
        "Failed",
        "did not shut down within 5 seconds",
        "system",
    ):
        assert text in html
    partial = admin_client.get(reverse("jobs"), headers=HX).content.decode()
    assert partial.startswith('<div id="job-results"') and "Run web1" in partial


# ---- Login and logout -----------------------------------------------------------------------


def test_login_page_renders(client, db):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Log in to Vireo" in html and 'name="username"' in html and 'name="password"' in html
    assert "Sign Out" not in html and reverse("vms:list") not in html


def test_login_and_home(db):
    UserFactory(username="alice", password="secret", is_superuser=True)
    client = Client(enforce_csrf_checks=True)
    page = client.get(reverse("login"))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    wrong = client.post(
        reverse("login"),
        {"username": "alice", "password": "nope", "csrfmiddlewaretoken": token},
    )
    assert wrong.status_code == 200
    assert "didn't match" in wrong.content.decode()
    response = client.post(
        reverse("login"),
        {"username": "alice", "password": "secret", "csrfmiddlewaretoken": token},
        follow=True,
    )
    assert [url for url, _ in response.redirect_chain] == ["/", reverse("vms:list")]
    assert "Sign Out" in response.content.decode() and "alice" in response.content.decode()


def test_login_returns_to_next(client, db):
    UserFactory(username="bob", password="secret")
    response = client.post(
        reverse("login"), {"username": "bob", "password": "secret", "next": reverse("events")}
    )
    assert response["Location"] == reverse("events")


def test_logout_by_post(admin_client):
    page = admin_client.get(reverse("vms:list")).content.decode()
    assert f'action="{reverse("logout")}"' in page  # the Sign Out form posts
    assert admin_client.get(reverse("logout")).status_code == 405
    assert admin_client.get(reverse("vms:list")).status_code == 200
    response = admin_client.post(reverse("logout"))
    assert response.status_code == 302 and response["Location"] == reverse("login")
    after = admin_client.get(reverse("vms:list"))
    assert after.status_code == 302 and after["Location"].startswith(reverse("login"))


def test_logout_without_csrf_token_is_forbidden(admin):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.post(reverse("logout")).status_code == 403
    assert client.get(reverse("vms:list")).status_code == 200
