"""The VM search box in oVirt's syntax: the parser (vms.search) and the list view, as an
administrator and as a delegated user (who only ever finds their own VMs)."""

import re

import pytest
from django.db import connection
from django.urls import reverse
from factories import ClusterFactory, HostFactory, UserFactory, VMFactory, grant
from helpers import HX, html_find

from portal.kernel.search import SEARCH_MAX, SearchError
from vms.choices import VMStatus
from vms.models import VirtualMachine
from vms.search import vm_search


@pytest.fixture
def inventory(db):
    """web1 (Up, host1, Lab, 4096 MB), web2 (Down, host1, Lab, 1024 MB),
    db1 (Up, host2, Prod, 8192 MB), webmail (Suspended, host2, Prod, 2048 MB)."""
    lab = ClusterFactory(name="Lab")
    prod = ClusterFactory(name="Prod", data_center=lab.data_center)
    host1 = HostFactory(name="host1", cluster=lab)
    host2 = HostFactory(name="host2", cluster=prod)
    return {
        "web1": VMFactory(name="web1", host=host1, status=VMStatus.UP, memory_mb=4096, vcpus=2),
        "web2": VMFactory(name="web2", host=host1, status=VMStatus.DOWN, memory_mb=1024),
        "db1": VMFactory(name="db1", host=host2, status=VMStatus.UP, memory_mb=8192, vcpus=4),
        "webmail": VMFactory(name="webmail", host=host2, status=VMStatus.SUSPENDED, memory_mb=2048),
    }


def names(text: str) -> list[str]:
    return sorted(VirtualMachine.objects.filter(vm_search(text)).values_list("name", flat=True))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", ["db1", "web1", "web2", "webmail"]),
        ("Vms:", ["db1", "web1", "web2", "webmail"]),
        ("web", ["web1", "web2", "webmail"]),  # a plain word: names containing it, as before
        ("eb", ["web1", "web2", "webmail"]),
        ("name = web*", ["web1", "web2", "webmail"]),
        ("Vms: name = web*", ["web1", "web2", "webmail"]),
        ("vms:name=WEB1", ["web1"]),
        ("name = *1", ["db1", "web1"]),
        ("name = *eb*", ["web1", "web2", "webmail"]),
        ("name = w*l", ["webmail"]),
        ("name != web*", ["db1"]),
        ("web*", ["web1", "web2", "webmail"]),
        ("status = up", ["db1", "web1"]),
        ("status = Up", ["db1", "web1"]),
        ("status != up", ["web2", "webmail"]),
        ("status = down or status = suspended", ["web2", "webmail"]),
        ('status = "Image Locked"', []),
        ("host = host1", ["web1", "web2"]),
        ("cluster = Lab", ["web1", "web2"]),
        ("cluster = lab and status = up", ["web1"]),
        ("memory > 2048", ["db1", "web1"]),
        ("memory >= 2048", ["db1", "web1", "webmail"]),
        ("memory < 2048", ["web2"]),
        ("memory <= 2gb", ["web2", "webmail"]),
        ("memory = 8192", ["db1"]),
        ("memory != 8192", ["web1", "web2", "webmail"]),
        ("cpus > 1", ["db1", "web1"]),
        ("name = web* and status = up or memory > 4096", ["db1", "web1"]),
        ("name = web* and (status = up or memory > 4096)", ["web1"]),
        ("status = up or name = web2 and memory < 2048", ["db1", "web1", "web2"]),
        ("web status = up", ["web1"]),  # side by side: both hold
        ("STATUS = UP AND HOST = HOST2", ["db1"]),
    ],
)
def test_search_finds(inventory, text, expected):
    assert names(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("colour = red", "Unknown field 'colour'"),
        ("status = sleepy", "There is no status 'sleepy'"),
        ("memory > lots", "memory needs a whole number"),
        ("memory > 99999999999999999999", "memory needs a whole number"),
        ("name > web", "Use = or != with name"),
        ("status < up", "Use = or != with status"),
        ("name =", "'name =' needs a value"),
        ("= web", "needs a field before it"),
        ("name = web and", "ends where a condition was expected"),
        ("and name = web", "needs a condition on each side"),
        ("(status = up", "')' is missing"),
        ("status = up)", "Unexpected ')'"),
        ("Hosts: name = host1", "start with 'Vms:'"),
        ("name = web!", "Unexpected '!'"),
        ("a\x00b", "control characters"),
        ("x" * (SEARCH_MAX + 1), "too long"),
        (" or ".join(["a"] * 21), "at most 20 conditions"),
    ],
)
def test_bad_search_says_why(text, message):
    with pytest.raises(SearchError, match=re.escape(message)):
        vm_search(text)


def test_prefix_search_uses_the_name_index(inventory):
    """`name = web*` is a prefix match the functional index on UPPER(name) answers."""
    if connection.vendor != "postgresql":
        pytest.skip("the pattern index is PostgreSQL's")
    sql, params = (
        VirtualMachine.objects.filter(vm_search("name = web*")).values("pk").query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "vm_name_upper_pattern" in plan, plan


def test_memory_search_uses_an_index(inventory):
    if connection.vendor != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    sql, params = (
        VirtualMachine.objects.filter(vm_search("memory > 2048"))
        .values("pk")
        .query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "Index" in plan and "memory_mb" in plan, plan


# -- the list view ----------------------------------------------------------------------------


def listed(response) -> list[str]:
    return sorted(
        e.get("data-name") for e in html_find(response, "[data-name]") if e.get("data-name")
    )


def test_admin_searches_the_list(admin_client, inventory):
    url = reverse("vms:table")
    response = admin_client.get(url, {"q": "Vms: name = web* and status = up"}, headers=HX)
    assert response.status_code == 200
    assert listed(response) == ["web1"]
    response = admin_client.get(reverse("vms:list"), {"q": "cluster = Prod"})
    assert listed(response) == ["db1", "webmail"]


def test_bad_search_shows_its_message_above_the_list(admin_client, inventory):
    response = admin_client.get(reverse("vms:table"), {"q": "status = sleepy"}, headers=HX)
    assert response.status_code == 200
    body = response.content.decode()
    assert "There is no status &#x27;sleepy&#x27;" in body
    assert 'class="error search-error"' in body
    assert listed(response) == []
    full = admin_client.get(reverse("vms:list"), {"q": "memory > ?"})
    assert full.status_code == 200 and "search-error" in full.content.decode()


def test_delegated_user_finds_only_their_vms(client, inventory):
    """bob holds UserVmEngine on web1 only (and an admin role elsewhere to open the portal):
    a search matching every web VM shows him web1 alone."""
    from vms.models import Network

    bob = UserFactory(username="bob")
    grant(bob, "UserVmEngine", inventory["web1"])
    grant(
        bob,
        "NetworkAdmin",
        Network.objects.create(name="n", data_center=inventory["db1"].cluster.data_center),
    )
    client.force_login(bob)
    for text in (
        "name = web*",
        "web",
        "status = up or status = down",
        "host = host1",
        "memory > 0",
    ):
        response = client.get(reverse("vms:table"), {"q": text}, headers=HX)
        assert response.status_code == 200
        assert listed(response) == ["web1"], text
    response = client.get(reverse("vms:table"), {"q": "name = db*"}, headers=HX)
    assert listed(response) == []


def test_a_search_keeps_to_the_address_bar(admin_client, inventory):
    """Search, sort and page chosen by the user replace the address (reload keeps them); the
    live refresh of the list does not touch it."""
    response = admin_client.get(reverse("vms:table"), {"q": "web", "sort": "-memory"}, headers=HX)
    assert response["HX-Replace-Url"] == "/vms/?q=web&sort=-memory"
    live = admin_client.get(
        reverse("vms:table"),
        {"q": "web", "sort": "-memory"},
        headers={**HX, "HX-Trigger": "vm-results"},
    )
    assert "HX-Replace-Url" not in live
