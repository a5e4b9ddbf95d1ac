"""High availability in headless Chromium on the real libvirtd with qemu (issue 12): an
administrator marks a running VM Highly Available in Edit VM's High Availability tab, its
QEMU process is killed on the host (kill -9, outside the portal), and the open page shows,
without a reload, the VM leave Up (its row, and the Down and "failed" Events in its Events
sub-tab) and come back Up on its own, restarted by Vireo.

The inventory is made directly (a cluster, the private libvirtd as an Up host, a dir pool as
a data domain); the production monitor and two RQ workers run as threads of this process.
The guest is tiny (64 MB, no OS) under TCG. What the test made on the host is removed after."""

import os
import signal
import threading
import time
import uuid

import pytest
from django.db import connection
from integration.libvirtd import ensure_libvirtd, make_pool, remove_pool
from playwright.sync_api import expect

import hypervisor
from portal.kernel.models import Job
from vms.choices import HostStatus, VMStatus
from vms.models import VirtualMachine
from vms.monitor import Monitor
from vms.services import vm_create, vm_run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

SLOW = 60_000  # ms


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def real_site(transactional_db, tmp_path, admin_user, rq_workers):
    """A cluster with the private libvirtd as an Up host, a data domain on a pool of the
    test's own, a running tiny VM made through Vireo, and the monitor; all taken away after."""
    from factories import ClusterFactory, HostFactory, StorageDomainFactory

    if os.geteuid() != 0:
        pytest.skip("the real host needs root (a private libvirtd)")
    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:8]
    pool = make_pool(uri, f"vireo-ha-{tag}", tmp_path / "pool")
    cluster = ClusterFactory(name=f"ha-{tag}")
    host = HostFactory(name=f"real-{tag}", cluster=cluster, uri=uri, status=HostStatus.UP)
    domain = StorageDomainFactory(data_center=cluster.data_center, pool_name=pool)
    mon = Monitor(poll_seconds=1.0, stale_seconds=300)

    def run():
        try:
            mon.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="vireo-monitor-ha", daemon=True)
    thread.start()
    vm = None
    try:
        _wait(lambda: host.pk in mon.watched, 20, "the monitor to connect")
        vm = vm_create(
            user=admin_user,
            name=f"ha-{tag}",
            cluster_id=cluster.pk,
            memory_mb=64,
            vcpus=1,
            disk_bytes=16 * 1024 * 1024,
            storage_domain_id=domain.pk,
        )
        _wait(lambda: VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.DOWN, 60, "created")
        vm_run(vm_id=vm.pk, user=admin_user)
        _wait(lambda: VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.UP, 60, "Up")
        yield vm
    finally:
        _wait(lambda: not Job.objects.filter(status__in=Job.ACTIVE).exists(), 60, "jobs to end")
        mon.stop.set()
        thread.join(timeout=15)
        mon.pool.shutdown(wait=True)
        conn = hypervisor.Connection(uri)
        try:
            if vm is not None:
                for step in (conn.destroy, conn.undefine_domain):
                    try:
                        step(str(vm.uuid))
                    except hypervisor.HypervisorError:
                        pass
            for volume in conn.list_volumes(pool):
                conn.delete_volume(pool, volume.name)
        finally:
            conn.close()
        remove_pool(uri, pool)
        hypervisor.disconnect_all()


def shot(page, name: str) -> None:
    if os.environ.get("VIREO_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["VIREO_SHOTS"], name), full_page=True)


def qemu_pid(name: str) -> int:
    from integration.libvirtd import BASE

    return int((BASE / "run" / "qemu" / f"{name}.pid").read_text().strip())


def test_a_vm_made_highly_available_comes_back_after_its_qemu_is_killed(
    real_site, admin_page, console_errors
):
    vm, page = real_site, admin_page
    window = page.locator("#modal-content")
    page.goto(f"/vms/?selected={vm.pk}")
    row = page.locator(f"#vm-row-{vm.pk}")
    expect(row.locator("td.status")).to_have_text("Up")
    page.locator("#vm-details button.edit-vm").click()
    window.locator("label.side-tab", has_text="High Availability").click()
    window.locator("input[name=highly_available]").check()
    shot(page, "vm-high-availability-tab.png")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text(f"VM {vm.name} saved.")
    expect(page.locator("#vm-details .highly-available")).to_have_text("Yes")
    assert VirtualMachine.objects.get(pk=vm.pk).highly_available

    page.locator("#vm-details nav.sub-tabs a", has_text="Events").click()
    expect(page.locator("#vm-details")).to_contain_text(f"edited VM {vm.name}")
    # Every status the row shows from now on, and a mark a reload would wipe.
    page.evaluate(
        """(pk) => {
          window.vireoNoReload = true;
          window.seenStatuses = [];
          const note = () => {
            const cell = document.querySelector(`#vm-row-${pk} td.status`);
            const text = cell ? cell.innerText.trim().split("\\n")[0] : "";
            if (text && window.seenStatuses[window.seenStatuses.length - 1] !== text)
              window.seenStatuses.push(text);
          };
          new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true});
          note();
        }""",
        vm.pk,
    )
    killed = qemu_pid(vm.name)
    os.kill(killed, signal.SIGKILL)  # outside the portal

    pane = page.locator("#vm-details")
    expect(pane).to_contain_text(f"VM {vm.name} is now Down (was Up)", timeout=SLOW)
    expect(pane).to_contain_text(f"Highly Available {vm.name} failed", timeout=SLOW)
    expect(pane).to_contain_text(f"{vm.name} was restarted on Host", timeout=SLOW)
    expect(row.locator("td.status")).to_have_text("Up", timeout=SLOW)
    seen = page.evaluate("window.seenStatuses")
    print("the row showed", seen)
    shot(page, "vm-restarted-events.png")
    assert seen[0] == "Up" and seen[-1] == "Up" and len(seen) >= 3, seen
    assert set(seen[1:-1]) <= {"Down", "Powering Up"}, seen
    assert page.evaluate("window.vireoNoReload") is True  # the same page all along
    assert qemu_pid(vm.name) != killed
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.UP


def test_power_management_on_edit_host(inventory, admin_page, console_errors):
    """Edit Host's Power Management tab: a bad address is refused in the window, a good one
    saved; the password is never shown again."""
    page = admin_page
    window = page.locator("#modal-content")
    page.goto("/vms/hosts/")
    page.locator("#host-results tbody tr", has_text="hv-01").get_by_role(
        "button", name="Edit"
    ).click()
    window.locator("label.side-tab", has_text="Power Management").click()
    window.get_by_label("Enable Power Management").check()
    window.get_by_label("Address").fill("10.0.0.9; reboot")
    window.get_by_label("User Name").fill("admin")
    window.get_by_label("Password").fill("bmc-Secret")
    window.get_by_label("Options").fill("lanplus=1, cipher=3")
    window.get_by_role("button", name="OK").click()
    expect(window).to_contain_text("Address must be an IP address or a host name")
    window.locator("label.side-tab", has_text="Power Management").click()
    window.get_by_label("Address").fill("10.0.0.9")
    window.get_by_label("Password").fill("bmc-Secret")
    shot(page, "host-power-management-tab.png")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages")).to_contain_text("Host hv-01 saved.")
    host = inventory.host
    host.refresh_from_db()
    assert (host.pm_enabled, host.pm_address, host.pm_options) == (
        True,
        "10.0.0.9",
        "lanplus=1, cipher=3",
    )
    page.locator("#host-results tbody tr", has_text="hv-01").get_by_role(
        "button", name="Edit"
    ).click()
    expect(window.get_by_label("Address")).to_have_value("10.0.0.9")
    assert "bmc-Secret" not in window.inner_html()
    confirm = page.locator("#host-results tbody tr", has_text="hv-01").locator(
        "button[data-action=confirm_rebooted]"
    )
    expect(confirm).to_be_disabled()  # the host is Up
