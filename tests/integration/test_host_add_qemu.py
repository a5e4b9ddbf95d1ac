"""A real libvirtd with qemu added as a host, as `manage.py addhost` adds one: the monitor
connects, marks it Up and stores what libvirt reports (CPU model, cores, memory, libvirt and
QEMU versions), which the Hosts tab then shows; Maintenance and Activate go through it."""

import re
import subprocess

import pytest
from django.db import connections
from django.urls import reverse
from factories import ClusterFactory
from helpers import html_one, html_text

from vms import inventory, services
from vms.choices import HostStatus
from vms.models import Host
from vms.monitor import Monitor

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def virsh_version(uri: str) -> dict[str, str]:
    """`virsh version`'s lines: "Using library: libvirt 9.0.0" -> {"library": "9.0.0", ...}."""
    out = subprocess.run(
        ["virsh", "-c", uri, "version"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    found = {}
    for key, pattern in [
        ("library", r"Using library: libvirt (\S+)"),
        ("hypervisor", r"Running hypervisor: QEMU (\S+)"),
    ]:
        match = re.search(pattern, out)
        if match:
            found[key] = match.group(1)
    return found


def cycle(monitor: Monitor) -> None:
    monitor.cycle(wait=30)
    for future in list(monitor.polling.values()):
        future.result(timeout=30)


def test_the_private_libvirtd_added_as_a_host(libvirt_uri, conn, admin, admin_client):
    cluster = ClusterFactory(name="it-hosts")
    host = services.host_add(
        user=admin, name="it-qemu-host", uri=libvirt_uri, cluster_id=cluster.pk, trusted=True
    )
    assert host.status == HostStatus.CONNECTING
    monitor = Monitor(poll_seconds=30, stale_seconds=300)
    try:
        cycle(monitor)
        host.refresh_from_db()
        facts = conn.host_info()
        versions = virsh_version(libvirt_uri)
        assert host.status == HostStatus.UP, host.last_error
        assert host.cpu_model and host.cpu_model == facts.cpu_model
        assert host.cores >= 1 and host.cores == facts.cores
        assert host.cpus >= host.cores // 2 and host.cpus == facts.cpus
        assert host.memory_mb > 0 and host.memory_mb == facts.memory_mb
        assert host.libvirt_version == versions["library"]
        assert host.hypervisor_version == versions["hypervisor"]
        assert host.hostname

        row = html_one(admin_client.get(reverse("vms:hosts")), f"#host-{host.pk}")
        assert html_text(html_one(row, ".cpu-model")) == host.cpu_model
        assert html_text(html_one(row, ".cores")) == str(host.cores)
        assert html_text(html_one(row, ".libvirt-version")) == host.libvirt_version
        assert html_text(html_one(row, ".qemu-version")) == host.hypervisor_version

        inventory.host_maintenance(host_id=host.pk, user=admin)
        cycle(monitor)
        assert Host.objects.get(pk=host.pk).status == HostStatus.MAINTENANCE
        inventory.host_activate(host_id=host.pk, user=admin)
        cycle(monitor)
        assert Host.objects.get(pk=host.pk).status == HostStatus.UP
    finally:
        monitor.stop.set()
        monitor.pool.shutdown(wait=True)
        for conn_ in list(monitor.watched.values()):
            conn_.close()
        connections.close_all()
