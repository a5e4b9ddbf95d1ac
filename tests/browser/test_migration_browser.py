"""Migrate in the browser on real qemu (issue 11): two private libvirtds of this machine
(tests/integration/libvirtd.py `ensure_peer`) are the hosts of one cluster; a running guest
on the first is migrated to the second from the Migrate Virtual Machine(s) window, and the VM
list shows, with no reload, Migrating From with the destination, the progress bar with
libvirt's figures, then the VM Up on its new host.

The guest is diskless (its firmware runs) with 2 GiB of memory, and the cluster caps a
migration at 8 Mbps (libvirt's 1 MiB/s, its lowest), so even its untouched pages take
seconds to cross: long enough to be seen.
"""

import os
import re
import threading
import time

import pytest
from django.db import connection
from integration.libvirtd import ensure_peer
from playwright.sync_api import expect

import hypervisor
from portal.kernel.models import Job
from vms.choices import HostStatus, VMStatus
from vms.jobs import vm_domain_spec
from vms.models import VirtualMachine
from vms.monitor import Monitor

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

SLOW = 90_000  # ms


@pytest.fixture
def pair(transactional_db):
    """A cluster of the two peer hosts (Up) and a running 2 GiB guest on the first."""
    from factories import ClusterFactory, HostFactory, VMFactory

    if os.geteuid() != 0:
        pytest.skip("the real hosts need root (private libvirtds)")
    uris = [ensure_peer(1), ensure_peer(2)]
    cluster = ClusterFactory(name="Pair", migration_bandwidth="custom", migration_bandwidth_mbps=8)
    hosts = [
        HostFactory(name=f"peer{n}", cluster=cluster, uri=uri, status=HostStatus.CONNECTING)
        for n, uri in enumerate(uris, start=1)
    ]
    vm = VMFactory(
        name=f"mig-{os.getpid()}",
        cluster=cluster,
        host=hosts[0],
        status=VMStatus.UP,
        memory_mb=2048,
        vcpus=1,
    )
    conn = hypervisor.Connection(uris[0])
    conn.define_domain(vm_domain_spec(vm))
    conn.start(str(vm.uuid))
    conn.close()
    try:
        yield vm, hosts
    finally:
        for uri in uris:
            peer = hypervisor.Connection(uri)
            for step in (peer.destroy, peer.undefine_domain):
                try:
                    step(str(vm.uuid))
                except hypervisor.HypervisorError:
                    pass
            peer.close()


@pytest.fixture
def monitor(pair, rq_workers):
    """The production monitor in a thread, polling every second (it brings the hosts Up with
    their memory and CPUs, which the scheduler reads)."""
    mon = Monitor(poll_seconds=1.0, stale_seconds=300)

    def run():
        try:
            mon.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="vireo-monitor", daemon=True)
    thread.start()
    yield mon
    deadline = time.monotonic() + 60
    while Job.objects.filter(status__in=Job.ACTIVE).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    mon.stop.set()
    thread.join(timeout=15)
    mon.pool.shutdown(wait=True)
    hypervisor.disconnect_all()


def test_migrate_shows_migrating_from_the_progress_and_the_new_host_live(pair, monitor, admin_page):
    vm, (peer1, peer2) = pair
    page, window = admin_page, admin_page.locator("#modal")
    deadline = time.monotonic() + 60
    while set(type(peer1).objects.values_list("memory_mb", flat=True)) & {0}:
        assert time.monotonic() < deadline, "the monitor did not read the hosts"
        time.sleep(0.3)
    row = page.locator(f"#vm-row-{vm.pk}")
    expect(row).to_contain_text("peer1")
    row.locator("td.status").click()
    page.locator("#vm-toolbar button[data-action=migrate]").click()
    expect(window.locator("h2")).to_have_text("Migrate Virtual Machine(s)")
    window.get_by_label("Select Destination Host").check()
    window.locator("select[name=host]").select_option(label="peer2")
    window.get_by_role("button", name="OK").click()

    badge = row.locator(".status-badge")
    expect(badge).to_have_text("Migrating From", timeout=SLOW)
    expect(row).to_contain_text("→ peer2")
    bar = row.locator(".progress")
    expect(bar).to_have_attribute(
        "title", re.compile(r"Migrating to peer2: \d+ of \d+ MiB of memory left"), timeout=SLOW
    )
    page.screenshot(path="test-results/migrating-from.png", full_page=True)
    expect(badge).to_have_text("Up", timeout=SLOW)
    expect(row.locator("td").nth(2)).to_have_text("peer2")
    expect(bar).to_have_count(0)
    vm.refresh_from_db()
    assert (vm.status, vm.host_id, vm.migrating_to_id) == (VMStatus.UP, peer2.pk, None)
    assert (
        hypervisor.connect(peer2.uri).get_domain(str(vm.uuid)).state
        == hypervisor.DomainState.RUNNING
    )
    assert VirtualMachine.objects.filter(pk=vm.pk).count() == 1
