"""The permission matrix: every URL of the project, and the live websocket, tried by users
holding each built-in role at each scope it makes sense at, on an object inside the scope and
on one in another data center.

RULES (permission_matrix_rules.py) describes every URL name: what kind of URL it is, what it
needs, and how to fill its arguments; who asks and the world are in permission_matrix_world.py. The matrix walks the project's URL patterns and fails on a name without a
rule, so a view added later cannot ship without someone deciding its check. Expectations
come from the catalogue's role tables and a map of which objects lie under which written out
here by hand, never from the resolver under test.
"""

import logging

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test import Client
from django.urls import get_resolver, resolve
from helpers import HX
from permission_matrix_rules import RULES, WEBSOCKET_RULES, Case, Rule, sides, url_names
from permission_matrix_world import ROLE_SCOPES, WHO, Who, World, build_world, make_who, who_id

from accounts.catalogue import BUILTIN_ROLES
from portal.shell.console_consumer import ConsoleConsumer
from portal.shell.consumers import LiveConsumer


@pytest.fixture(autouse=True)
def _quiet_and_quick(settings):
    """The thousands of expected 403s and 404s are not logged, and sessions live in a cookie
    (one query less on each of the matrix's requests)."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def test_every_builtin_role_is_in_the_matrix():
    assert {role for role, _ in ROLE_SCOPES} == set(BUILTIN_ROLES)


def test_every_url_has_a_rule():
    from portal.asgi import websocket_urlpatterns

    http = url_names(get_resolver().url_patterns)
    websocket = url_names(websocket_urlpatterns)
    assert len(http) == len(set(http)), "a URL name is used twice"
    missing = sorted(set(http) - set(RULES)) + sorted(set(websocket) - set(WEBSOCKET_RULES))
    assert not missing, f"URL names without a rule in the permission matrix: {missing}"
    stale = sorted(set(RULES) - set(http)) + sorted(set(WEBSOCKET_RULES) - set(websocket))
    assert not stale, f"rules for URL names that no longer exist: {stale}"


# -- running the matrix -----------------------------------------------------------------------


def _app_tables() -> list[str]:
    tables = set()
    for app in ("auth", "guardian", "accounts", "vms", "storage", "portal"):
        tables |= {m._meta.db_table for m in apps.get_app_config(app).get_models()}
    return sorted(tables)


def fingerprint() -> tuple:
    """A digest of every row of the project's tables (and users, groups and guardian's):
    whatever a refused POST might have changed (one query)."""
    qn = connection.ops.quote_name
    digests = ", ".join(
        f"(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {qn(table)} t)"
        for table in _app_tables()
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {digests}")
        return cursor.fetchone()


def expected(case: Case, who: Who) -> str:
    if case.need.public:
        return "ok"
    if who.anonymous:
        return "login"
    if case.need.admin and not who.is_admin():
        return "403"
    if not case.need.met(who):
        return "404"
    if case.refused_unless is not None and not case.refused_unless.met(who):
        return "refused"
    return "ok"


def outcome(response) -> str:
    code = response.status_code
    if code == 302 and response.url.startswith("/login/?next="):
        return "login"
    if code in (403, 404):
        return str(code)
    if code in (200, 302):
        return "ok"
    return f"status {code}"


def run(client: Client, case: Case, who: Who) -> str | None:
    """Send one request; the mismatch with what the rule table expects, or None."""
    assert resolve(case.url.split("?")[0]).view_name == case.name, case.url
    want = expected(case, who)
    changes_checked = case.method == "POST"
    before = fingerprint() if changes_checked else None
    if case.method == "GET":
        response = client.get(case.url)
    else:
        response = client.post(case.url, case.data or {}, headers=HX)
    got = outcome(response)
    if want == "refused" and got == "ok":
        got = "refused"
    where = f"{case.method} {case.url} ({case.name})"
    if got != want:
        return f"{where}: expected {want}, got {got}"
    if case.redirect is not None and want == "ok":
        if response.status_code != 302 or response.url != case.redirect(who):
            return f"{where}: expected a redirect to {case.redirect(who)}, got {response.status_code} {response.get('Location')}"
    if changes_checked and fingerprint() != before:
        return f"{where}: answered {got} but changed something"
    return None


def all_cases(world: World) -> list[tuple[Rule, Case]]:
    return [(rule, case) for rule in RULES.values() for case in rule.cases(world)]


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO, ids=[who_id(w) for w in WHO])
def test_matrix(who):
    """Every GET, on objects inside and outside the scope; every POST on the other data
    center's objects or behind a global gate that must be refused (a 403, a 404, the login page
    or a form's refusal), each leaving the database as it was."""
    world = build_world()
    oracle, user = make_who(world, who)
    client = Client()
    if user is not None:
        client.force_login(user)
    cases = all_cases(world)
    assert {case.name for _, case in cases} == set(RULES), "a rule that tries nothing"
    gets = [rc for rc in cases if rc[1].method == "GET"]
    posts = [
        rc
        for rc in cases
        if rc[1].method == "POST"
        and rc[1].name != "logout"
        and not rc[1].inside
        and expected(rc[1], oracle) != "ok"
    ]
    last = [rc for rc in cases if rc[1].name == "logout"]
    failures, known = [], []
    for rule, case in gets + posts + last:
        problem = run(client, case, oracle)
        if problem and rule.known_bug:
            known.append(f"{problem} [known: {rule.known_bug}]")
        elif problem:
            failures.append(problem)
    assert not failures, f"{oracle.label}:\n" + "\n".join(failures + known)
    if known:
        pytest.xfail("\n".join(known))


# -- the live websocket -----------------------------------------------------------------------


@pytest.fixture
def own_channel_prefix(settings):
    """A channel-layer prefix of this test's own, so no other run's messages reach it."""
    import uuid

    layers = {name: dict(conf) for name, conf in settings.CHANNEL_LAYERS.items()}
    layers["default"]["CONFIG"] = {
        **layers["default"]["CONFIG"],
        "prefix": f"matrix-{uuid.uuid4().hex[:12]}",
    }
    settings.CHANNEL_LAYERS = layers


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_websocket_matrix(own_channel_prefix):
    """Subscribing to vm.<id> is accepted exactly where the user may see the VM; to "perms"
    (the Permissions windows' topic) where they may read some Permissions window."""
    world = await database_sync_to_async(build_world)()
    failures = []
    for who in WHO:
        oracle, user = await database_sync_to_async(make_who)(world, who)
        communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
        communicator.scope["user"] = user or AnonymousUser()
        if oracle.anonymous:
            if await communicator.connect() != (False, 4401):
                failures.append(f"{oracle.label}: anonymous socket was not closed with 4401")
            continue
        ok, _ = await communicator.connect()
        assert ok, oracle.label
        topics = [f"vm.{world.inside.vm.pk}", f"vm.{world.outside.vm.pk}", "perms"]
        await communicator.send_json_to({"subscribe": topics})
        reply = await communicator.receive_json_from(timeout=5)
        want = [t for t, s in zip(topics, sides(world), strict=False) if oracle.holds("view", s.vm)]
        if oracle.is_admin() or "manage_permissions" in oracle.actions:
            want.append("perms")
        if reply != {"subscribed": want, "refused": [t for t in topics if t not in want]}:
            failures.append(f"{oracle.label}: expected {want} accepted, got {reply}")
        await communicator.disconnect()
        # The next role's user takes the same name: drop this one.
        if user is not None:
            await database_sync_to_async(user.delete)()
    assert not failures, "\n".join(failures)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_console_websocket_matrix(own_channel_prefix):
    """The console's websocket is kept open (waiting for its ticket) exactly where the user
    holds console on the VM; elsewhere it closes with 4404 (anonymous: 4401)."""
    world = await database_sync_to_async(build_world)()
    failures = []
    for who in WHO:
        oracle, user = await database_sync_to_async(make_who)(world, who)
        for side in sides(world):
            path = f"/ws/console/{side.vm.pk}/"
            communicator = WebsocketCommunicator(ConsoleConsumer.as_asgi(), path)
            communicator.scope["user"] = user or AnonymousUser()
            communicator.scope["url_route"] = {"kwargs": {"pk": side.vm.pk}}
            connected, code = await communicator.connect()
            if oracle.anonymous:
                if (connected, code) != (False, 4401):
                    failures.append(f"{oracle.label} {path}: expected 4401, got {code}")
                continue
            want = oracle.holds("console", side.vm)
            output = await communicator.receive_output(timeout=1) if not want else None
            closed = output is not None and output.get("type") == "websocket.close"
            if want and (not connected or closed):
                failures.append(f"{oracle.label} {path}: closed for a user holding console")
            if not want and not (closed and output.get("code") == 4404):
                # the refusal comes as a text frame first, then the close
                nxt = await communicator.receive_output(timeout=1)
                if nxt.get("code") != 4404:
                    failures.append(f"{oracle.label} {path}: expected 4404, got {output} {nxt}")
            await communicator.disconnect()
        if user is not None:
            await database_sync_to_async(user.delete)()
    assert not failures, "\n".join(failures)
