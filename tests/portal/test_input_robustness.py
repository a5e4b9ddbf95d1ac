"""Input that once gave server errors: ids too big for the database, a megabyte of search
text, and the same role created twenty times at once."""

import threading

import pytest
from django.db import connection, connections
from django.urls import Resolver404, resolve, reverse
from factories import UserFactory, VMFactory, grant
from helpers import HX

from accounts import services
from accounts.models import Role
from portal.kernel.converters import ID_MAX, parse_id
from portal.kernel.errors import ActionRefused

BIG = "99999999999999999999"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("12", 12),
        ("0", 0),
        (str(ID_MAX), ID_MAX),
        (str(ID_MAX + 1), None),
        (BIG, None),
        ("²", None),  # str.isdigit() says yes, int() says no
        ("١٢", None),  # Arabic-Indic digits: not an id in a URL
        ("-1", None),
        ("1e3", None),
        (" 1", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_id(value, expected):
    assert parse_id(value) == expected


@pytest.mark.parametrize(
    "path",
    [
        f"/vms/{BIG}/",
        f"/vms/{BIG}/row/",
        f"/vms/{BIG}/snapshots/{BIG}/delete/",
        f"/storage/disks/{BIG}/attach/",
        f"/configure/roles/{BIG}/edit/",
        f"/permissions/vm/{BIG}/",
        f"/user/vms/{BIG}/card/",
    ],
)
def test_an_id_too_big_for_the_database_matches_no_url(path):
    with pytest.raises(Resolver404):
        resolve(path)


def test_the_id_converter_still_reverses_and_resolves():
    assert resolve(reverse("vms:row", args=[ID_MAX])).kwargs == {"pk": ID_MAX}


@pytest.fixture
def delegated_client(client, db):
    """A ClusterAdmin of one cluster (with one VM in it)."""
    vm = VMFactory()
    user = UserFactory()
    grant(user, "ClusterAdmin", vm.cluster)
    client.force_login(user)
    client.vm = vm
    return client


@pytest.mark.parametrize("who", ["admin", "delegated"])
@pytest.mark.parametrize(
    "url",
    [
        f"/vms/action/run/?vm={BIG}",
        f"/vms/action/remove/?vm=1&vm={BIG}",
        "/vms/action/shutdown/?vm=%C2%B2",
        f"/vms/?selected={BIG}",
        "/vms/?selected=%C2%B2",
    ],
)
def test_big_or_odd_ids_in_query_strings_are_no_server_error(
    who, url, admin_client, delegated_client, django_assert_max_num_queries
):
    client = admin_client if who == "admin" else delegated_client
    response = client.get(url)
    assert response.status_code in (200, 404)


def test_action_with_a_big_id_asks_the_database_nothing_about_it(
    admin_client, django_assert_num_queries
):
    """The id is refused before any query (on SQLite it raised OverflowError)."""
    admin_client.get("/")  # the session and the user's grants are read once
    with django_assert_num_queries(2):  # the session and the user, nothing about VMs
        response = admin_client.post(reverse("vms:action", args=["run"]), {"vm": BIG})
    assert response.status_code == 404


def test_a_megabyte_search_in_add_permission_is_refused_with_a_message(admin_client):
    from accounts.models import System

    url = reverse("permission_add", args=["system", System.get().pk])
    response = admin_client.get(url, {"q": "x" * 1_000_000}, headers=HX)
    assert response.status_code == 200
    assert "The search is too long: at most 200 characters." in response.content.decode()
    response = admin_client.get(url, {"q": "a\x00b"}, headers=HX)
    assert response.status_code == 200
    assert "control characters" in response.content.decode()


def test_a_megabyte_vm_search_is_refused_with_a_message(admin_client):
    response = admin_client.get(reverse("vms:table"), {"q": "x" * 1_000_000}, headers=HX)
    assert response.status_code == 200
    assert "The search is too long" in response.content.decode()


def test_role_names_are_unique_whatever_their_case(admin):
    services.role_create(
        user=admin, name="RaceRole", description="", is_admin=False, actions=["view"]
    )
    with pytest.raises(ActionRefused, match="already exists"):
        services.role_create(
            user=admin, name="racerole", description="", is_admin=False, actions=["view"]
        )
    other = services.role_create(
        user=admin, name="Other", description="", is_admin=False, actions=["view"]
    )
    with pytest.raises(ActionRefused, match="already exists"):
        services.role_update(
            user=admin,
            role_id=other.pk,
            name="RACEROLE",
            description="",
            is_admin=False,
            actions=["view"],
        )


def test_the_database_refuses_a_second_role_name_in_another_case(db):
    from django.db import IntegrityError, transaction

    Role.objects.create(name="Twice")
    with pytest.raises(IntegrityError), transaction.atomic():
        Role.objects.create(name="TWICE")


@pytest.mark.django_db(transaction=True)
def test_twenty_requests_creating_one_role_at_once_make_it_once():
    """20 threads, each its own database connection, create RaceRole / racerole / RACEROLE at
    the same moment: one wins, the others are refused with a message, none fails."""
    from factories import SuperUserFactory

    admin = SuperUserFactory()
    start = threading.Barrier(20)
    outcomes = []

    def create(n: int) -> None:
        name = ("RaceRole", "racerole", "RACEROLE", "raceRole")[n % 4]
        try:
            start.wait()
            services.role_create(
                user=admin, name=name, description="", is_admin=False, actions=["view"]
            )
            outcomes.append("created")
        except ActionRefused as exc:
            outcomes.append(f"refused: {exc}")
        except Exception as exc:  # a server error: what this test is about
            outcomes.append(f"error: {type(exc).__name__}: {exc}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 1, outcomes
    assert all(o == "created" or "already exists" in o for o in outcomes), outcomes
    assert Role.objects.filter(name__iexact="racerole").count() == 1
    assert connection.vendor  # the main connection is still usable
