"""Helpers shared by the modules split out of test_accounts_views.py."""

from django.contrib.auth.models import Group
from django.test import Client
from factories import (
    ClusterFactory,
    DataCenterFactory,
    HostFactory,
    StorageDomainFactory,
    UserFactory,
    VMFactory,
    grant,
)
from helpers import GiB, html_find, html_one, html_text

from accounts.permissions import object_permissions
from vms.choices import VMStatus
from vms.models import Template


def build_world():
    """Data center Paris (cluster, host, storage, a Down and an Up VM, a template), another
    data center with one VM, and a few accounts."""
    dc = DataCenterFactory(name="Paris")
    cluster = ClusterFactory(name="paris-1", data_center=dc)
    host = HostFactory(name="paris-h1", cluster=cluster)
    sd = StorageDomainFactory(name="paris-data", data_center=dc)
    web = VMFactory(name="web1", host=host)
    db = VMFactory(name="db1", host=host, status=VMStatus.UP)
    template = Template.objects.create(name="rhel9", data_center=dc, disk_bytes=2 * GiB)
    elsewhere = VMFactory(name="far1", host=HostFactory(cluster=ClusterFactory()))
    engine = UserFactory(username="engine")
    grant(engine, "UserVmEngine", web)
    alice = UserFactory(username="alice", first_name="Alice", last_name="Martin")
    bob = UserFactory(username="bob", first_name="Bob", last_name="Builder")
    ops = Group.objects.create(name="ops-team")
    ops.user_set.add(bob)
    return {
        "dc": dc,
        "cluster": cluster,
        "host": host,
        "sd": sd,
        "web": web,
        "db": db,
        "template": template,
        "elsewhere": elsewhere,
        "engine": engine,
        "alice": alice,
        "bob": bob,
        "ops": ops,
    }


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def permission_rows(response) -> list[tuple[str, str, str, str]]:
    """(User/Group badge, principal, role, inherited from) of each row of a Permissions list."""
    return [
        tuple(html_text(td) for td in row.findall("td")[:4])
        for row in html_find(response, "tr.perm-row")
    ]


def picker(response) -> list[str]:
    """The principals the Add window offers: user:<username> or group:<name>."""
    found = []
    for box in html_find(response, "input[name=principal]"):
        kind, _, pk = box.get("value").partition(":")
        if kind in ("user", "group") and pk.isdigit():
            label = html_one(response, f"label[for={box.get('id')}]")
            found.append(f"{kind}:{html_text(label)}")
    return found


def role_options(response) -> set[str]:
    return {
        html_text(option)
        for option in html_find(response, "select[name=role] option[value]")
        if html_text(option)
    }


def messages(response) -> list[str]:
    return [html_text(message) for message in html_find(response, "div.msg")]


def card_ids(response) -> set[int]:
    return {int(card.get("id").removeprefix("vm-card-")) for card in html_find(response, ".card")}


def card_buttons(response, vm) -> dict[str, bool]:
    """Each User Portal action button of a VM's card -> enabled?"""
    cards = html_find(response, f"#vm-card-{vm.pk}")
    assert cards, f"no card for {vm.name}"
    return {
        button.get("data-card-action"): button.get("disabled") is None
        for button in html_find(cards[0], ".card-actions [data-card-action]")  # Console: a link
    }


def row_id_of(obj, principal) -> tuple[str, int]:
    row = next(r for r in object_permissions(obj) if r.principal == principal and not r.inherited)
    return row.kind, row.id
