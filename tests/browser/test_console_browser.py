"""The console in headless Chromium on a real qemu VM (issue 10, part 3): the Administration
Portal's Console button opens a window where noVNC draws the firmware's screen (pixels that are
not all one colour); a UserRole user does the same from the User Portal's card; a user without
"Connect to the console" gets a 404 for the window and a 4404 close for its websocket.

The VM is the integration suite's private libvirtd's: defined by Vireo's own domain builder
(vm_domain_spec, so with its VNC display), diskless (SeaBIOS and iPXE draw their screens), and
removed afterwards, pass or fail. daphne, the web process, reaches the VNC port on 127.0.0.1.
"""

import os
import re

import pytest
from integration.libvirtd import ensure_libvirtd
from playwright.sync_api import expect

import hypervisor
from vms.choices import HostStatus, VMStatus
from vms.jobs import vm_domain_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

PASSWORD = "console-suite-secret"
DRAWN = 60_000  # ms: qemu starting and the firmware drawing on a loaded machine

# True once the console's canvas holds pixels of more than one colour, drawn by the guest's
# firmware: before the guest sets a video mode, qemu itself draws "Guest has not initialized
# the display (yet)." at 640x480; SeaBIOS and iPXE draw in VGA text mode (720x400).
CANVAS_DRAWN = """() => {
  const canvas = document.querySelector("#console-screen canvas");
  if (!canvas || !canvas.width || !canvas.height) return false;
  if (canvas.width === 640 && canvas.height === 480) return false;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 4; i < data.length; i += 4) {
    if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) return true;
  }
  return false;
}"""


@pytest.fixture
def qemu_vm(transactional_db):
    """A running diskless VM on the private libvirtd, Up in the inventory."""
    from factories import ClusterFactory, HostFactory, VMFactory

    if os.geteuid() != 0:
        pytest.skip("the real host needs root (a private libvirtd)")
    uri = ensure_libvirtd()
    cluster = ClusterFactory(name="Console")
    host = HostFactory(name="hv-console", cluster=cluster, uri=uri, status=HostStatus.UP)
    name = f"vireo-console-{os.getpid()}"
    vm = VMFactory(name=name, host=host, status=VMStatus.UP, memory_mb=64, vcpus=1)
    conn = hypervisor.Connection(uri)
    conn.define_domain(vm_domain_spec(vm))
    try:
        conn.start(str(vm.uuid))
        yield vm
    finally:
        for step in (conn.destroy, conn.undefine_domain):
            try:
                step(str(vm.uuid))
            except hypervisor.HypervisorError:
                pass
        conn.close()


def log_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("User Name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log In").click()


# How many of the canvas's pixels differ from its first one (the background).
LIT_PIXELS = """() => {
  const canvas = document.querySelector("#console-screen canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 4; i < data.length; i += 4) {
    if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) lit++;
  }
  return lit;
}"""


def expect_drawn(console) -> None:
    expect(console.locator("#console-status")).to_have_text("Connected", timeout=DRAWN)
    console.wait_for_function(CANVAS_DRAWN, timeout=DRAWN, polling=250)
    expect(console.locator("#console-cad")).to_be_enabled()


def test_console_in_both_portals_and_refused_without_the_action(
    browser, live_server_url, qemu_vm, console_errors
):
    from factories import SuperUserFactory, UserFactory, grant

    SuperUserFactory(username="admin", password=PASSWORD)
    carol = UserFactory(username="carol", password=PASSWORD)
    grant(carol, "UserRole", qemu_vm)
    UserFactory(username="eve", password=PASSWORD)  # no role on the VM

    # The Administration Portal: select the VM, Console opens a window of its own.
    admin = browser.new_context(base_url=live_server_url, viewport={"width": 1300, "height": 900})
    page = admin.new_page()
    log_in(page, "admin")
    expect(page).to_have_url(re.compile(r"/vms/$"))
    page.locator(f"#vm-row-{qemu_vm.pk} td.name").click()
    button = page.locator("#vm-toolbar button[data-action=console]")
    expect(button).to_be_enabled()
    with admin.expect_page() as opened:
        button.click()
    console = opened.value
    errors = []
    console.on("pageerror", lambda exc: errors.append(str(exc)))
    expect_drawn(console)
    console.screenshot(path="/tmp/vireo-console-admin.png")
    console.locator("#console-disconnect").click()
    expect(console.locator("#console-status")).to_have_text("Disconnected.")
    assert not errors, errors
    admin.close()

    # The User Portal: a UserRole user's card has Console.
    user = browser.new_context(base_url=live_server_url, viewport={"width": 1300, "height": 900})
    page = user.new_page()
    log_in(page, "carol")
    expect(page).to_have_url(re.compile(r"/user/$"))
    link = page.locator(f"#vm-card-{qemu_vm.pk} a[data-card-action=console]")
    with user.expect_page() as opened:
        link.click()
    expect_drawn(opened.value)
    user.close()

    # Without "Connect to the console": a 404 for the window, 4404 for its websocket.
    other = browser.new_context(base_url=live_server_url)
    page = other.new_page()
    log_in(page, "eve")
    expect(page).to_have_url(re.compile(r"/user/$"))
    assert page.goto(f"/vms/{qemu_vm.pk}/console/").status == 404
    assert page.goto(f"/vms/{qemu_vm.pk}/console.vv").status == 404
    code = page.evaluate(
        """pk => new Promise(done => {
             const ws = new WebSocket(`ws://${location.host}/ws/console/${pk}/`);
             ws.onclose = (e) => done(e.code);
           })""",
        qemu_vm.pk,
    )
    assert code == 4404
    other.close()
