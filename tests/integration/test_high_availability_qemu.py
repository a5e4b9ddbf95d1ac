"""High availability on a real libvirtd with qemu (issue 12): a Highly Available guest whose
QEMU process is killed with `kill -9` is restarted by Vireo and ends Up, with Events; a guest
that is not Highly Available, killed the same way, stays Down; a Highly Available guest shut
down from Vireo (Power Off: these tiny guests have no OS to honour ACPI) stays Down.

The guests are tiny (64 MB, no OS: SeaBIOS idles) under TCG; the monitor runs in a thread (a
poll every 2 s, lifecycle events at once), the Run jobs on a real RQ worker in the test's
thread. Every domain and volume made is removed afterwards (the `prefix` fixture)."""

import os
import signal
import subprocess
import threading

import pytest
from django.db import connection
from factories import ClusterFactory, HostFactory, StorageDomainFactory
from libvirtd import BASE
from test_vm_lifecycle_qemu import create_vm, last_job, status, wait_for

from portal.kernel.models import Event, Job, JobKind
from vms.choices import HostStatus, VMStatus
from vms.models import HaRestart, Host
from vms.monitor import Monitor
from vms.services import vm_edit, vm_poweroff, vm_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def site(libvirt_uri, qemu_pool):
    cluster = ClusterFactory(shutdown_timeout=5)
    host = HostFactory(cluster=cluster, uri=libvirt_uri, status=HostStatus.UP)
    domain = StorageDomainFactory(data_center=cluster.data_center, pool_name=qemu_pool)
    return cluster, host, domain


@pytest.fixture
def monitor(site, prefix):
    """The monitor in a thread: events at once, a poll and an HA pass every 2 s."""
    _cluster, host, _domain = site
    watcher = Monitor(poll_seconds=2, stale_seconds=300)

    def run():
        try:
            watcher.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="test-monitor-ha", daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: host.pk in watcher.watched, 15), "first monitor cycle"
        assert wait_for(lambda: Host.objects.get(pk=host.pk).last_seen, 15)
        yield watcher
    finally:
        watcher.stop.set()
        thread.join(15)
        assert not thread.is_alive()


def qemu_pid(name: str) -> int:
    """The pid of the guest's QEMU process (libvirt's pid file, else its command line)."""
    pidfile = BASE / "run" / "qemu" / f"{name}.pid"
    if pidfile.exists():
        return int(pidfile.read_text().strip())
    found = subprocess.run(
        ["pgrep", "-f", f"guest={name},"], capture_output=True, text=True, check=True
    )
    (pid,) = found.stdout.split()
    return int(pid)


def running_ha_vm(name, site, admin, work, work_off, conn, *, highly_available=True):
    vm = create_vm(name, site, admin, work_off, conn)
    vm_edit(
        vm_id=vm.pk, user=admin, description="", sso_enabled=True, highly_available=highly_available
    )
    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.UP, last_job(vm).error
    return vm


def messages(vm) -> list[str]:
    return list(Event.objects.filter(vm=vm).order_by("pk").values_list("message", flat=True))


def test_a_highly_available_guest_killed_is_restarted_then_a_power_off_stays(
    site, admin, work, work_off, conn, prefix, monitor
):
    vm = running_ha_vm(f"{prefix}-ha", site, admin, work, work_off, conn)
    _cluster, host, _domain = site
    killed = qemu_pid(vm.name)
    os.kill(killed, signal.SIGKILL)  # outside the portal

    def restarted() -> bool:
        work_off()  # the HA watcher's Run job
        return status(vm) == VMStatus.UP and qemu_pid(vm.name) != killed

    assert wait_for(lambda: status(vm) != VMStatus.UP, 10), "seen Down"
    assert wait_for(restarted, 60, step=0.2), (status(vm), messages(vm))
    assert wait_for(lambda: not HaRestart.objects.filter(vm=vm).exists(), 10)
    said = messages(vm)
    assert f"VM {vm.name} is now Down (was Up), as reported by host {host.name}." in said
    assert (
        f"Highly Available {vm.name} failed (its QEMU process failed or was killed). It will "
        "be restarted automatically." in said
    ), said
    assert f"Restarting Highly Available VM {vm.name} on host {host.name}." in said
    assert f"{vm.name} was restarted on Host {host.name}." in said
    (run,) = Job.objects.filter(vm=vm, kind=JobKind.VM_RUN, user__isnull=True)
    assert run.params["ha_restart"] is True

    # Shut down from Vireo: the guest stays Down.
    work(lambda: vm_poweroff(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.DOWN, last_job(vm).error
    assert not wait_for(lambda: work_off() or status(vm) != VMStatus.DOWN, 5)
    assert not HaRestart.objects.filter(vm=vm).exists()
    assert Job.objects.filter(vm=vm, kind=JobKind.VM_RUN).count() == 2  # its first Run, the HA one


def test_a_guest_that_is_not_highly_available_killed_stays_down(
    site, admin, work, work_off, conn, prefix, monitor
):
    vm = running_ha_vm(f"{prefix}-plain", site, admin, work, work_off, conn, highly_available=False)
    os.kill(qemu_pid(vm.name), signal.SIGKILL)
    assert wait_for(lambda: status(vm) == VMStatus.DOWN, 10)
    assert not wait_for(lambda: work_off() or status(vm) != VMStatus.DOWN, 5)
    assert not HaRestart.objects.filter(vm=vm).exists()
    assert Job.objects.filter(vm=vm, kind=JobKind.VM_RUN).count() == 1
    assert not Event.objects.filter(vm=vm, action="ha_restart").exists()
