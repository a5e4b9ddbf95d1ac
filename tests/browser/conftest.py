"""Fixtures of the browser suite: the portal served by daphne in a subprocess, the monitor and
RQ workers in this process, and headless Chromium.

libvirt's test driver keeps a host's state inside the process that opened it, so everything
that talks to the hosts (monitor, workers, and the test acting "on the host") runs here, while
the web side, which never talks to hosts, runs as its own process on the same (committed)
test database and Redis.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest

import hypervisor
from portal.kernel.models import Job
from portal.kernel.tasks import get_queue
from portal.kernel.worker import ThreadWorker
from vms import testhosts
from vms.choices import VMStatus

BASE_DIR = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_PASSWORD = "browser-suite-secret"
TIMEOUT_MS = 10_000

# Records what the page's websocket receives (the page's own handlers are untouched), so a
# test can wait for a subscription to be acknowledged before it lets a job finish. A Proxy,
# not a subclass: the sockets stay native WebSockets (noVNC checks that the socket it is given
# has WebSocket.prototype's own properties, which a subclass's prototype lacks).
WS_RECORDER = """
(() => {
  window.__wsLog = [];
  window.WebSocket = new Proxy(window.WebSocket, {
    construct(Native, args) {
      const socket = new Native(...args);
      socket.addEventListener("open", () => window.__wsLog.push({open: true}));
      socket.addEventListener("close", (e) => window.__wsLog.push({close: e.code}));
      socket.addEventListener("message", (e) => {
        if (typeof e.data !== "string") return;
        try { window.__wsLog.push(JSON.parse(e.data)); } catch (_) {}
      });
      return socket;
    },
  });
})();
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url(settings_dict: dict) -> str:
    if "postgresql" not in settings_dict["ENGINE"]:
        pytest.skip("the browser suite needs PostgreSQL (DATABASE_URL=postgres://...)")
    auth = quote(settings_dict.get("USER") or "", safe="")
    if settings_dict.get("PASSWORD"):
        auth += ":" + quote(settings_dict["PASSWORD"], safe="")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{quote(settings_dict['NAME'], safe='')}"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """A test database of the browser suite's own (test_<name>_browser): daphne holds
    connections to it for the whole run, which must not fight another pytest run on the
    same server over the shared test_<name>."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("sqlite3"):
        test = db.setdefault("TEST", {})
        test["NAME"] = f"{test.get('NAME') or 'test_' + db['NAME']}_browser"


@pytest.fixture(scope="session")
def live_server_url(django_db_setup, tmp_path_factory):
    """The portal under daphne in a subprocess, on the pytest-django test database (through
    live_server_asgi, which keeps daphne's content types in step with the flushes)."""
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    # ISO uploads are staged by the web and read by the workers (here): one directory.
    settings.VIREO_UPLOAD_DIR = tmp_path_factory.mktemp("uploads")
    env.update(
        DATABASE_URL=_database_url(connection.settings_dict),
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SETTINGS_MODULE=settings.SETTINGS_MODULE,
        VIREO_VAR_DIR=str(tmp_path_factory.mktemp("web-var")),
        VIREO_UPLOAD_DIR=str(settings.VIREO_UPLOAD_DIR),
        VIREO_LOG_LEVEL="WARNING",
    )
    port = _free_port()
    log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
            + ["tests.browser.live_server_asgi:application"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited ({proc.returncode}):\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/login/", timeout=2) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"daphne did not answer on {url}:\n{log_path.read_text()}")
        time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _StoppableThreadWorker(ThreadWorker):
    """portal.kernel.worker's thread worker, waking every second while idle so that it can leave
    its loop when `halt` is set (RQ stops workers by signals, which threads cannot take)."""

    def __init__(self, *args, halt: threading.Event, **kwargs):
        super().__init__(*args, **kwargs)
        self.halt = halt

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        while not self.halt.is_set():
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=1)
            if result is not None:
                return result
        return None


@pytest.fixture(scope="module")
def rq_workers():
    """Two RQ workers as threads of this process, so jobs reach the in-process test hosts.
    They stop with the module: left running they would take the jobs that later suites in
    the same session run themselves (the `work` fixture)."""
    halt = threading.Event()
    queue = get_queue()
    threads = []
    for n in range(2):
        worker = _StoppableThreadWorker(
            [queue],
            connection=queue.connection,
            name=f"vireo-browser-{os.getpid()}-{n}",
            halt=halt,
        )
        thread = threading.Thread(
            target=worker.work, kwargs={"logging_level": "WARNING"}, daemon=True
        )
        thread.start()
        threads.append(thread)
    yield threads
    halt.set()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "an RQ worker thread did not stop"


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium (never a downloaded one)."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import expect, sync_playwright

    # Playwright's sync API keeps an asyncio loop running in this thread, which makes Django
    # refuse ORM calls here; the tests' own ORM use is plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    expect.set_options(timeout=TIMEOUT_MS)
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def console_errors():
    """Console errors and uncaught exceptions of the test's page; checked at teardown.
    A test that expects some (a refused websocket) clears the list."""
    errors: list[str] = []
    yield errors
    assert not errors, f"browser console errors: {errors}"


@pytest.fixture
def page(browser, live_server_url, console_errors):
    """A fresh browser context and page (no cookies) on the live server."""
    # Playwright evaluates string predicates (wait_for_function) with eval(), which the
    # portal's Content-Security-Policy refuses; test_security_browser runs under the policy.
    context = browser.new_context(
        base_url=live_server_url, viewport={"width": 1400, "height": 900}, bypass_csp=True
    )
    context.add_init_script(WS_RECORDER)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)

    def on_console(message):
        where = message.location.get("url", "")
        # Chromium asks for /favicon.ico by itself; the portal has none.
        if message.type == "error" and not where.endswith("/favicon.ico"):
            console_errors.append(f"console: {message.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: console_errors.append(f"pageerror: {exc}"))
    page.on(
        "response",
        lambda r: r.status >= 400 and console_errors.append(f"HTTP {r.status}: {r.url}"),
    )
    yield page
    context.close()


@pytest.fixture
def admin_user(transactional_db):
    from factories import SuperUserFactory

    return SuperUserFactory(username="admin", password=ADMIN_PASSWORD)


@pytest.fixture
def admin_page(page, admin_user):
    """`page` logged in as a superuser through the real login form, on the Virtual Machines
    tab, with its live-update websocket connected."""
    from playwright.sync_api import expect

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("User Name").fill(admin_user.username)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log In").click()
    expect(page).to_have_url(re.compile(r"/vms/$"))
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))
    return page


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def inventory(transactional_db):
    """One data center, a cluster asking for a shutdown reason, one test-driver host and six
    VMs (three Up, three Down), each with one disk. Committed, so daphne sees it."""
    from factories import (
        ClusterFactory,
        DataCenterFactory,
        DiskFactory,
        HostFactory,
        StorageDomainFactory,
        VMFactory,
    )

    dc = DataCenterFactory(name="Default")
    cluster = ClusterFactory(name="Production", data_center=dc, shutdown_reason_enabled=True)
    StorageDomainFactory(name="data1", data_center=dc)
    host = HostFactory(name="hv-01", cluster=cluster)
    vms = {}
    for name, status in [
        ("web-01", VMStatus.UP),
        ("web-02", VMStatus.UP),
        ("db-01", VMStatus.UP),
        ("batch-01", VMStatus.DOWN),
        ("batch-02", VMStatus.DOWN),
        ("golden", VMStatus.DOWN),
    ]:
        vm = VMFactory(name=name, host=host, status=status, memory_mb=2048, vcpus=2)
        DiskFactory(vm=vm, alias=f"{name}_Disk1")
        vms[name] = vm
    testhosts.node_file_write(host)
    return SimpleNamespace(dc=dc, cluster=cluster, host=host, vms=vms)


@pytest.fixture
def monitor(inventory, rq_workers):
    """The monitor in a thread of this process (polling every second), started once the
    inventory and its node files exist; it has connected to every host when this returns."""
    mon = testhosts.TestHostMonitor(poll_seconds=1.0)
    thread = threading.Thread(target=mon.run, name="vireo-monitor", daemon=True)
    thread.start()
    _wait_for(lambda: inventory.host.pk in mon.watched, 10, "the monitor to connect")
    yield mon
    # Let jobs still running end before the tables are flushed under them.
    _wait_for(lambda: not Job.objects.filter(status__in=Job.ACTIVE).exists(), 15, "jobs to finish")
    mon.stop.set()
    thread.join(timeout=10)
    mon.pool.shutdown(wait=True)  # a host poll still running would write after the flush
    mon.agent_pool.shutdown(wait=True)  # and so would a guest agents' pass
    hypervisor.disconnect_all()


@pytest.fixture
def portal(inventory, monitor, admin_page):
    """Everything a test drives: the inventory, the monitor, the logged-in page."""
    return SimpleNamespace(page=admin_page, monitor=monitor, **vars(inventory))
