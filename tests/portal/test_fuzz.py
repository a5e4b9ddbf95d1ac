"""Fuzz every URL of the project with hypothesis: path arguments, query strings and form
fields full of hostile values (control characters, huge text, numbers out of any range, ids
the database cannot hold, ids of objects out of reach), sent as GET and POST by a superuser
and by a delegated administrator. Whatever comes in, the answer is never a server error.

The URLs come from the URL resolver (as in the permission matrix), so a view added later is
fuzzed without anyone writing a case for it; its form fields are read from the page itself.
The examples are bounded (MAX_EXAMPLES per URL) so the whole file runs in well under a minute.
"""

import logging
import os
import re
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from factories import (
    ClusterFactory,
    DataCenterFactory,
    DiskFactory,
    HostFactory,
    StorageDomainFactory,
    SuperUserFactory,
    UserFactory,
    VMFactory,
    grant,
)
from guardian.models import UserObjectPermission
from helpers import HX
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Role, RoleAction, System
from accounts.views import PERMISSION_KINDS
from portal.kernel.converters import ID_MAX
from vms.actions import SnapshotAction, VMAction
from vms.choices import SnapshotStatus, VMStatus
from vms.models import Network, Snapshot, Template
from vms.selectors import SORTS
from vms.views import DETAIL_TABS

# FUZZ_EXAMPLES=500 for a long hunt; make test runs the bounded default.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
BIG = "99999999999999999999"


def url_patterns(patterns=None, prefix="", namespace=()) -> list[tuple[str, str]]:
    """(URL name, route with converters) of every URL the project serves."""
    found = []
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            ns = (*namespace, pattern.namespace) if pattern.namespace else namespace
            found += url_patterns(pattern.url_patterns, prefix + str(pattern.pattern), ns)
        elif isinstance(pattern, URLPattern):
            found.append((":".join((*namespace, pattern.name)), prefix + str(pattern.pattern)))
    return found


ROUTES = url_patterns()
# The shared action endpoints are one URL for many windows: each action is fuzzed on its own.
EXPANDED = {"vms:action": VMAction.values, "vms:snapshot_end_preview": ["commit", "undo"]}
CASES = [
    (name, route, fixed)
    for name, route in ROUTES
    for fixed in ([{"action": a} for a in EXPANDED[name]] if name in EXPANDED else [{}])
]
ARG_RE = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")


def test_every_url_is_fuzzed():
    assert len(ROUTES) > 30 and all(ARG_RE.sub("", route).count("<") == 0 for _, route in ROUTES)


@pytest.fixture(autouse=True)
def _quiet_and_quick(settings):
    """Sessions in a cookie (logging in per example is free) and no log line per 404."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture
def world(db):
    """Two data centers with one of everything; a superuser; a delegated administrator
    (ClusterAdmin of the first cluster, UserVmEngine on a VM of the second)."""
    objects = {}
    for label in ("a", "b"):
        dc = DataCenterFactory(name=f"dc-{label}")
        cluster = ClusterFactory(
            name=f"cluster-{label}", data_center=dc, shutdown_reason_enabled=label == "a"
        )
        host = HostFactory(name=f"host-{label}", cluster=cluster)
        sd = StorageDomainFactory(name=f"data-{label}", data_center=dc)
        down = VMFactory(name=f"down-{label}", host=host)
        up = VMFactory(name=f"up-{label}", host=host, status=VMStatus.UP)
        disk = DiskFactory(vm=down, storage_domain=sd)
        floating = DiskFactory(vm=None, alias=f"floating-{label}", storage_domain=sd, host=host)
        network = Network.objects.create(name=f"net-{label}", data_center=dc)
        template = Template.objects.create(name=f"tpl-{label}", data_center=dc)
        snapshot = Snapshot.objects.create(
            vm=down, description=f"snap-{label}", status=SnapshotStatus.OK, memory_mb=1024, vcpus=1
        )
        objects[label] = [dc, cluster, host, sd, down, up, disk, floating, network, template]
        objects[label].append(snapshot)
    role = Role.objects.create(name="Scratch", description="unassigned")
    RoleAction.objects.create(role=role, action="view")
    bystander = UserFactory(username="bystander")
    for obj in [System.get(), *objects["a"][:2], objects["a"][4], objects["b"][4]]:
        grant(bystander, "UserRole", obj)  # permission rows to remove: system, dc, cluster, VMs
    delegated = UserFactory(username="delegated")
    grant(delegated, "ClusterAdmin", objects["a"][1])
    grant(delegated, "UserVmEngine", objects["b"][5])
    everything = [System.get(), role, *objects["a"], *objects["b"]]
    return {
        "admin": SuperUserFactory(username="fuzzadmin"),
        "delegated": delegated,
        "ids": sorted({o.pk for o in everything}),
        "snapshot_ids": [objects["a"][-1].pk, objects["b"][-1].pk],
        "row_ids": list(UserObjectPermission.objects.values_list("pk", flat=True)),
        "vm_ids": [o.pk for o in (*objects["a"][4:6], *objects["b"][4:6])],
    }


WORDS = sorted(
    {
        *VMAction.values,
        *SnapshotAction.values,
        *DETAIL_TABS,
        *PERMISSION_KINDS,
        "user",
        "group",
        *SORTS,
        *(f"-{s}" for s in SORTS),
        "general",
        "disks",
        "nics",
        "apps",
        "roles",
        "system",
        "thin",
        "preallocated",
        "admin",
        "on",
        "1",
        "true",
    }
)
HOSTILE = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01\x02\x1b[31m",
    "\r\n",
    "\ud7ff\ufffe\uffff",
    "x" * 300,
    "x" * 100_000,
    "<script>alert(1)</script>",
    "'; DROP TABLE vms_virtualmachine; --",
    "%",
    "_",
    "*",
    "../../etc/passwd",
    "qemu+ext:///system?command=/bin/sh",
    "test:///etc/passwd",
    "name = web* and status = up",
    "memory > 99999999999999999999",
    "((((((((((",
    "Vms: status = up or",
    "-",
    "..",
    "1e308",
    "NaN",
    "²",
    "-0",
    BIG,
    str(ID_MAX),
    str(ID_MAX + 1),
    str(2**31),
    str(2**15),
    "-1",
]


def values(world) -> st.SearchStrategy[str]:
    ids = st.sampled_from(world["ids"] + world["snapshot_ids"] + world["row_ids"]).map(str)
    return st.one_of(
        st.sampled_from(HOSTILE),
        st.sampled_from(WORDS),
        ids,
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.text(max_size=40),
        st.text(st.characters(max_codepoint=0x20), max_size=5),  # control characters
    )


def path_value(world, conv: str, name: str) -> st.SearchStrategy[str]:
    if conv == "id":
        real = {"sid": world["snapshot_ids"], "row_id": world["row_ids"]}.get(name, world["ids"])
        return st.one_of(
            st.sampled_from(real).map(str),
            st.sampled_from(["0", str(ID_MAX), BIG]),
            st.integers(min_value=0, max_value=10**6).map(str),
        )
    return st.one_of(
        st.sampled_from(PATH_OPTIONS.get(name, WORDS)),
        st.sampled_from(WORDS),
        st.sampled_from(HOSTILE).filter(lambda v: v and "/" not in v),
        st.text(min_size=1, max_size=30).filter(lambda v: "/" not in v),
    )


def build_path(route: str, args: dict[str, str]) -> str:
    return "/" + ARG_RE.sub(lambda m: quote(args[m.group("name")], safe=""), route)


QUERY_NAMES = [
    "q",
    "sort",
    "page",
    "selected",
    "vm",
    "snapshot",
    "sub",
    "window",
    "tab",
    "floating",
]
PATH_OPTIONS = {
    "action": [*VMAction.values, *SnapshotAction.values],
    "tab": list(DETAIL_TABS),
    "kind": list(PERMISSION_KINDS),
    "row_kind": ["user", "group"],
}
TAG_RE = re.compile(r"<(input|select|textarea|option)\b([^>]*)>")
ATTR_RE = re.compile(r'\b(name|value)="([^"]*)"')


def form_fields(client: Client, route: str, world, fixed: dict) -> dict[str, list[str]]:
    """The field names the URL's pages offer and the values they offer in them (defaults,
    hidden ids, options), read from what the URL renders for real objects."""
    fields: dict[str, set[str]] = {}
    combos = [dict(fixed)]
    for arg in (m.group("name") for m in ARG_RE.finditer(route) if m.group("name") not in fixed):
        options = PATH_OPTIONS.get(arg) or {
            "sid": world["snapshot_ids"][:1],
            "row_id": world["row_ids"][:2],
        }.get(arg, world["vm_ids"][:2] + world["ids"][:6])
        combos = [{**c, arg: str(o)} for c in combos for o in options]
    tries = [(c, world["vm_ids"][0]) for c in combos[:6]] + [(combos[0], world["vm_ids"][1])]
    for combo, vm in tries:
        response = client.get(build_path(route, combo), {"vm": vm}, headers=HX)
        if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
            continue
        select = None
        for tag, attrs in TAG_RE.findall(response.content.decode(errors="replace")):
            attrs = dict(ATTR_RE.findall(attrs))
            if tag == "option" and select:
                fields[select].add(attrs.get("value", ""))
            elif "name" in attrs:
                select = attrs["name"] if tag == "select" else None
                fields.setdefault(attrs["name"], set())
                if "value" in attrs:
                    fields[attrs["name"]].add(attrs["value"])
    fields.pop("csrfmiddlewaretoken", None)
    return {name: sorted(seen) for name, seen in sorted(fields.items())}


CORE = ["a\x00b", "\x00", "x" * 100_000, "\x01\x7f", BIG, "-1", "0", str(2**31), "", "*"]


def form_data(fields: dict[str, list[str]], value) -> st.SearchStrategy[dict]:
    """Mostly the form as offered (so the request gets past the form to the service) with
    one to three fields hostile; sometimes any subset of fields with anything in them."""
    names = sorted(fields) or QUERY_NAMES
    hostile = st.one_of(st.sampled_from(CORE), value)

    def field(seen):
        choices = [st.lists(value, min_size=1, max_size=3), st.none()]
        if seen:
            choices = [st.sampled_from(seen).map(lambda v: [v])] * 2 + choices
        return st.one_of(*choices)

    @st.composite
    def offered_with_hostile(draw):
        data = {n: [draw(st.sampled_from(seen or ["fuzz"]))] for n, seen in fields.items()}
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)):
            data[name] = [draw(hostile)]
        return data

    anything = st.fixed_dictionaries({n: field(seen) for n, seen in fields.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not None}
    )
    return st.one_of(offered_with_hostile(), offered_with_hostile(), anything)


@pytest.mark.parametrize(
    "name, route, fixed",
    CASES,
    ids=[name + "".join(f"[{v}]" for v in fixed.values()) for name, _, fixed in CASES],
)
def test_no_server_error(name, route, fixed, world):
    admin, delegated = Client(), Client()
    fields = form_fields(_logged_in(admin, world["admin"]), route, world, fixed)
    args = [(m.group("conv") or "str", m.group("name")) for m in ARG_RE.finditer(route)]
    value = values(world)
    paths = {n: st.just(fixed[n]) if n in fixed else path_value(world, c, n) for c, n in args}

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        path=st.fixed_dictionaries(paths),
        method=st.sampled_from(["GET", "POST", "POST"]),
        data=form_data(fields, value),
        query=st.dictionaries(st.sampled_from(QUERY_NAMES), value, max_size=3),
        htmx=st.booleans(),
        who=st.sampled_from(["admin", "delegated"]),
    )
    def fuzz(path, method, data, query, htmx, who):
        url = build_path(route, path)
        client = _logged_in(admin if who == "admin" else delegated, world[who])
        headers = HX if htmx else {}
        if method == "GET":
            response = client.get(url, {**query, **data}, headers=headers)
        else:
            response = client.post(url, data, headers=headers)
        assert response.status_code < 500, f"{method} {url} {data!r} as {who}"

    fuzz()


def _logged_in(client: Client, user) -> Client:
    client.force_login(user)  # again: a fuzzed POST to /logout/ may have ended the session
    return client


def test_vm_search_fuzz(world):
    """The search box's parser on arbitrary text and on text built from its own grammar: a
    list or a message, never a server error, for both users."""
    admin, delegated = (
        _logged_in(Client(), world["admin"]),
        _logged_in(Client(), world["delegated"]),
    )
    piece = st.one_of(
        st.sampled_from(
            [
                "Vms:",
                "name",
                "status",
                "host",
                "cluster",
                "memory",
                "cpus",
                "datacenter",
                "=",
                "!=",
                ">",
                "<",
                ">=",
                "and",
                "or",
                "(",
                ")",
                "web*",
                "*",
                "up",
                "down",
                '"a b"',
                "'",
                '"',
                "2048",
                BIG,
                "Hosts:",
                "image_locked",
                "\x00",
                "é",
                "!",
            ]
        ),
        st.text(max_size=8),
    )
    query = st.one_of(st.lists(piece, max_size=12).map(" ".join), st.text(max_size=250))

    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(q=query)
    def fuzz(q):
        for client in (admin, delegated):
            response = client.get("/vms/table/", {"q": q}, headers=HX)
            assert response.status_code == 200, q

    fuzz()
