"""Production settings from the environment (README, "Running in production"): `check --deploy`
is clean with the README's production environment, HTTPS settings are on by default when
debug is off and each can be set, a short secret key stops the start, a Content-Security-Policy
with no inline script, Django's password validators, Change Password, and login throttling."""

import io
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from factories import UserFactory

from portal.shell.security import lockout_minutes

BASE_DIR = Path(__file__).resolve().parents[2]


def readme_production_env() -> dict[str, str]:
    """The NAME=value lines of the README's production environment block."""
    text = (BASE_DIR / "README.md").read_text()
    block = re.search(r"```sh\n# production environment[^\n]*\n(.*?)```", text, re.S)
    assert block, "README has no production environment block"
    env = {}
    for line in block.group(1).splitlines():
        name, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_]+", name):
            env[name] = value
    return env


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`manage.py ...` in a fresh process with exactly `env` (plus PATH): settings are read
    from the environment at start."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={"PATH": "/usr/bin:/bin", "VIREO_VAR_DIR": str(settings.VAR_DIR), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env() -> dict[str, str]:
    env = readme_production_env()
    assert env["VIREO_DEBUG"] == "0" and "VIREO_SECRET_KEY" in env
    env["VIREO_SECRET_KEY"] = secrets.token_urlsafe(50)  # the README shows a placeholder
    return env


SHOW = (
    "from django.conf import settings as s;"
    "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS,"
    " s.SECURE_HSTS_PRELOAD, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
    " getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
)


def test_check_deploy_is_clean_with_the_readme_production_environment():
    done = run_manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_https_settings_on_by_default_without_debug_and_each_settable():
    env = production_env()
    done = run_manage("shell", "--no-imports", "-c", SHOW, env=env)
    assert done.stdout.split("\n")[0] == (
        "True 31536000 True False True True ('HTTP_X_FORWARDED_PROTO', 'https')"
    ), done.stderr
    env.update(
        VIREO_SSL_REDIRECT="0",
        VIREO_HSTS_SECONDS="3600",
        VIREO_HSTS_INCLUDE_SUBDOMAINS="0",
        VIREO_HSTS_PRELOAD="1",
        VIREO_SECURE_COOKIES="0",
        VIREO_PROXY_SSL_HEADER="X-Forwarded-Scheme: https",
    )
    done = run_manage("shell", "--no-imports", "-c", SHOW, env=env)
    assert done.stdout.split("\n")[0] == (
        "False 3600 False True False False ('HTTP_X_FORWARDED_SCHEME', 'https')"
    ), done.stderr
    env["VIREO_PROXY_SSL_HEADER"] = ""
    done = run_manage("shell", "--no-imports", "-c", SHOW, env=env)
    assert done.stdout.split("\n")[0].endswith(" None"), done.stderr
    # With debug on (a laptop), none of it gets in the way of plain http://127.0.0.1.
    done = run_manage("shell", "--no-imports", "-c", SHOW, env={"VIREO_DEBUG": "1"})
    assert done.stdout.split("\n")[0] == "False 0 False False False False None", done.stderr


@pytest.mark.parametrize(
    "key",
    ["", "too-short-" * 4, "abcd" * 20],
    ids=["unset", "40 characters", "four different characters"],
)
def test_a_weak_secret_key_stops_the_start_without_debug(key):
    env = {**production_env(), "VIREO_SECRET_KEY": key}
    done = run_manage("check", env=env)
    assert done.returncode != 0
    assert "VIREO_SECRET_KEY must be set, at least 50 random characters" in done.stderr


# ---- Content-Security-Policy ----------------------------------------------------------------

INLINE_SCRIPT = [
    (re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an inline event handler (on...=)"),
    (re.compile(r"\shx-on[:-]", re.I), "hx-on (htmx compiles it with Function())"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
    (re.compile(r"hx-(vals|vars|headers)=['\"]\s*(js|javascript):", re.I), "htmx js: values"),
    (re.compile(r"hx-trigger=\"[^\"]*\[", re.I), "an htmx trigger filter (eval)"),
]


def test_templates_have_no_inline_script():
    """What the policy forbids must not be in a template, or the page would break under it."""
    found = []
    for path in sorted((BASE_DIR / "templates").rglob("*.html")):
        text = path.read_text()
        for pattern, what in INLINE_SCRIPT:
            for match in pattern.finditer(text):
                found.append(f"{path.relative_to(BASE_DIR)}: {what}: {match.group(0)[:60]}")
    assert not found, "\n".join(found)


@pytest.mark.django_db
def test_every_page_carries_the_content_security_policy(admin_client):
    for response in (
        Client().get(reverse("login")),
        admin_client.get(reverse("vms:list")),
        admin_client.get(reverse("vms:table"), headers={"HX-Request": "true"}),
    ):
        policy = response["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == "'self'"
        assert "unsafe" not in directives["script-src"] + directives["default-src"]
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    page = admin_client.get(reverse("vms:list")).content.decode()
    # htmx must not evaluate code from attributes, nor inject its own <style>.
    assert '"allowEval": false' in page and '"includeIndicatorStyles": false' in page


# ---- passwords ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_change_password_checks_the_validators_and_keeps_the_user_logged_in():
    user = UserFactory(username="carol", first_name="Carol", password="old-secret-Phrase-9")
    client = Client()
    client.force_login(user)
    page = client.get(reverse("user_portal")).content.decode()
    assert reverse("password_change") in page  # linked from the user menu
    form = client.get(reverse("password_change")).content.decode()
    assert "Change Password" in form and "Current Password" in form
    for old, new, message in (
        ("wrong", "a-much-better-passphrase-1", "Your old password was entered incorrectly"),
        ("old-secret-Phrase-9", "password", "This password is too common"),
        ("old-secret-Phrase-9", "short", "at least 8 characters"),
        ("old-secret-Phrase-9", "73519024681", "This password is entirely numeric"),
        ("old-secret-Phrase-9", "carol1234", "too similar to the"),
    ):
        response = client.post(
            reverse("password_change"),
            {"old_password": old, "new_password1": new, "new_password2": new},
        )
        assert response.status_code == 200
        assert message in response.content.decode(), message
        user.refresh_from_db()
        assert user.check_password("old-secret-Phrase-9")
    response = client.post(
        reverse("password_change"),
        {
            "old_password": "old-secret-Phrase-9",
            "new_password1": "a-much-better-passphrase-1",
            "new_password2": "a-much-better-passphrase-1",
        },
        follow=True,
    )
    assert "Your password was changed." in response.content.decode()
    user.refresh_from_db()
    assert user.check_password("a-much-better-passphrase-1")
    assert client.get(reverse("user_portal")).status_code == 200  # still logged in here
    assert Client().get(reverse("password_change")).status_code == 302  # anonymous: login


# ---- login throttling -----------------------------------------------------------------------


def _login(client: Client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password})


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.django_db
def test_wrong_passwords_lock_the_login_even_for_the_right_password():
    """300 wrong passwords in a row were all answered as ordinary tries, then the right one
    logged in."""
    UserFactory(username="dave", password="the-right-one-42")
    other = UserFactory(username="erin", password="erins-own-pass-7")
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    answers = [_login(client, "dave", f"guess-{n}").status_code for n in range(300)]
    assert answers[: limit - 1] == [200] * (limit - 1)  # the form again: "didn't match"
    assert set(answers[limit - 1 :]) == {429}
    response = _login(client, "dave", "the-right-one-42")
    assert response.status_code == 429 and not _logged_in(client)
    body = response.content.decode()
    assert "Too many failed logins" in body and f"{lockout_minutes()} minutes" in body
    # Another account from the same address is not locked with it.
    assert _login(client, other.username, "erins-own-pass-7").status_code == 302
    assert _logged_in(client)
    # An administrator lifts the lockout; then the right password logs in.
    call_command("axes_reset_username", "dave", stdout=io.StringIO())
    fresh = Client()
    assert _login(fresh, "dave", "the-right-one-42").status_code == 302 and _logged_in(fresh)


@pytest.mark.django_db
def test_a_successful_login_resets_the_count():
    UserFactory(username="frank", password="franks-pass-123")
    limit = settings.AXES_FAILURE_LIMIT
    for _round in range(3):
        for n in range(limit - 1):
            assert _login(Client(), "frank", f"nope-{n}").status_code == 200
        client = Client()
        assert _login(client, "frank", "franks-pass-123").status_code == 302
        assert _logged_in(client)


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["username", "password", "next"])
def test_a_control_character_in_a_login_is_refused_with_a_message(field):
    """A NUL anywhere in the login reached the lockout's records (PostgreSQL refuses NUL): 500."""
    UserFactory(username="gina", password="ginas-pass-123")
    data = {"username": "gina", "password": "ginas-pass-123", "next": "/"}
    data[field] += "\x00"
    client = Client()
    response = client.post(reverse("login"), data)
    assert response.status_code == 200
    assert "contains a control character" in response.content.decode()
    assert not _logged_in(client)
    # Nothing was counted against the account: the right login still works.
    assert _login(client, "gina", "ginas-pass-123").status_code == 302
