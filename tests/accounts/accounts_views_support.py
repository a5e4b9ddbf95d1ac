"""Helpers shared by the modules split out of test_accounts_views.py."""

import html
import re

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
from helpers import GiB

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


def text(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()


def permission_rows(response) -> list[tuple[str, str, str, str]]:
    """(User/Group badge, principal, role, inherited from) of each row of a Permissions list."""
    rows = []
    for row in re.findall(r'<tr class="perm-row">(.*?)</tr>', response.content.decode(), re.S):
        cells = [text(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        rows.append(tuple(cells[:4]))
    return rows


def picker(response) -> list[str]:
    """The principals the Add window offers: user:<username> or group:<name>."""
    body = response.content.decode()
    found = []
    for kind, _pk, label in re.findall(
        r'name="principal" value="(user|group):(\d+)"[^>]*></td><td><label[^>]*>([^<]*)</label>',
        body,
    ):
        found.append(f"{kind}:{label}")
    return found


def role_options(response) -> set[str]:
    select = re.search(r'<select name="role">(.*?)</select>', response.content.decode(), re.S)
    return set(re.findall(r"<option [^>]*>([^<]+)</option>", select.group(1))) if select else set()


def messages(response) -> list[str]:
    return [
        text(m)
        for m in re.findall(
            r'<div class="msg [^"]*"[^>]*>(.*?)</div>', response.content.decode(), re.S
        )
    ]


def card_ids(response) -> set[int]:
    return {int(pk) for pk in re.findall(r'id="vm-card-(\d+)"', response.content.decode())}


def card_buttons(response, vm) -> dict[str, bool]:
    """Each User Portal action button of a VM's card -> enabled?"""
    card = re.search(
        rf'id="vm-card-{vm.pk}".*?<div class="card-actions">(.*?)</div>',
        response.content.decode(),
        re.S,
    )
    assert card, f"no card for {vm.name}"
    return {
        action: "disabled" not in attrs
        for attrs, action in re.findall(
            r'<button([^>]*data-card-action="(\w+)"[^>]*)>', card.group(1)
        )
    }


def row_id_of(obj, principal) -> tuple[str, int]:
    row = next(r for r in object_permissions(obj) if r.principal == principal and not r.inherited)
    return row.kind, row.id
