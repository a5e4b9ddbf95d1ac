"""Views of the New VM window and the Hosts and Clusters tabs, and one VM driven end to end
through a real worker. (Split out of test_vm_views.py.)"""

import pytest
from django.urls import reverse
from factories import (
    ClusterFactory,
    DiskFactory,
    HostFactory,
    StorageDomainFactory,
    VMFactory,
)
from helpers import HX, GiB, assert_messages
from vm_views_support import EXPECTED_ACTIONS, S, action_url, row_actions

from portal.kernel.models import Event, Job, JobStatus
from storage.choices import DiskStatus
from storage.models import Disk
from vms.choices import HostStatus
from vms.models import Cluster, Host, VirtualMachine

# ---- New VM -------------------------------------------------------------------------------


@pytest.fixture
def place():
    """A cluster with an Up host and a data storage domain in its data center."""
    host = HostFactory(name="node1")
    domain = StorageDomainFactory(name="data1", data_center=host.cluster.data_center)
    return host.cluster, domain


def new_vm_data(cluster, domain, **overrides):
    data = {
        "name": "new1",
        "description": "",
        "cluster": cluster.pk,
        "memory_mb": 1024,
        "vcpus": 2,
        "disk_size_gb": 10,
        "storage_domain": domain.pk,
        "allocation": "thin",
    }
    data.update(overrides)
    return data


def test_new_vm_window(admin_client, place):
    cluster, domain = place
    response = admin_client.get(reverse("vms:new"), headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "New Virtual Machine" in html and cluster.name in html and domain.name in html


@pytest.mark.parametrize(
    "field,value,error",
    [
        ("memory_mb", 10, "Memory must be between 64 and 4,194,304 MB."),
        ("memory_mb", 5 * 1024 * 1024, "Memory must be between 64 and 4,194,304 MB."),
        ("vcpus", 0, "vCPUs must be between 1 and 256."),
        ("vcpus", 257, "vCPUs must be between 1 and 256."),
        ("name", "bad name", "Name may contain only letters"),
        ("memory_mb", "lots", "Enter a whole number."),
        ("disk_size_gb", 0, "Ensure this value is greater than or equal to 1."),
    ],
)
def test_new_vm_out_of_range_shows_error(admin_client, place, field, value, error):
    cluster, domain = place
    response = admin_client.post(
        reverse("vms:new"), new_vm_data(cluster, domain, **{field: value}), headers=HX
    )
    assert response.status_code == 200
    assert "HX-Retarget" not in response
    html = response.content.decode()
    assert "New Virtual Machine" in html and error in html
    assert not VirtualMachine.objects.exists() and not Job.objects.exists()


def test_new_vm_without_an_up_host_is_refused(admin_client, place):
    cluster, domain = place
    Host.objects.update(status=HostStatus.NON_RESPONSIVE)
    response = admin_client.post(reverse("vms:new"), new_vm_data(cluster, domain), headers=HX)
    html = response.content.decode()
    assert f"No host in cluster {cluster.name} can create the VM" in html
    assert "the host is Non Responsive" in html
    assert not VirtualMachine.objects.exists()


def test_new_vm_creates_image_locked_vm_with_locked_disk(admin_client, admin, place):
    cluster, domain = place
    response = admin_client.post(
        reverse("vms:new"), new_vm_data(cluster, domain, disk_size_gb=3), headers=HX
    )
    assert_messages(response, "success", "Creating VM new1.")
    vm = VirtualMachine.objects.get(name="new1")
    assert vm.status == S.IMAGE_LOCKED
    assert (vm.cluster, vm.host.name, vm.memory_mb, vm.vcpus) == (cluster, "node1", 1024, 2)
    disk = Disk.objects.get(vm=vm)
    assert (disk.status, disk.size_bytes, disk.storage_domain, disk.sparse) == (
        DiskStatus.LOCKED,
        3 * GiB,
        domain,
        True,
    )
    job = Job.objects.get()
    assert (job.kind, job.vm, job.user) == ("vm_create", vm, admin)


# ---- Hosts ---------------------------------------------------------------------------------


def test_host_list(admin_client):
    host = HostFactory(name="node7", status=HostStatus.UP)
    for response in (
        admin_client.get(reverse("vms:hosts")),
        admin_client.get(reverse("vms:hosts"), headers=HX),
    ):
        assert response.status_code == 200
        html = response.content.decode()
        assert "node7" in html and host.uri in html and host.cluster.name in html
    assert reverse("vms:host_new") in admin_client.get(reverse("vms:hosts")).content.decode()
    assert (
        admin_client.get(reverse("vms:hosts"), headers=HX)
        .content.decode()
        .startswith('<div id="host-results"')
    )


@pytest.mark.parametrize(
    "name,uri,error",
    [
        ("node2", "not a uri", "Give a libvirt URI such as qemu:///system"),
        ("node2", "http//x", "Give a libvirt URI such as qemu:///system"),
        ("bad name", "qemu+ssh://root@n2/system", "Host name is required"),
        ("node1", "qemu+ssh://root@n2/system", "A host with that name or URI already exists."),
        ("node2", "qemu+ssh://root@n1/system", "A host with that name or URI already exists."),
        ("", "qemu+ssh://root@n2/system", "This field is required."),
    ],
)
def test_new_host_errors(admin_client, name, uri, error):
    cluster = ClusterFactory()
    HostFactory(name="node1", uri="qemu+ssh://root@n1/system", cluster=cluster)
    response = admin_client.post(
        reverse("vms:host_new"), {"name": name, "uri": uri, "cluster": cluster.pk}, headers=HX
    )
    assert response.status_code == 200
    assert "HX-Retarget" not in response
    assert "New Host" in response.content.decode() and error in response.content.decode()
    assert Host.objects.count() == 1


def test_new_host_creates_a_connecting_host(admin_client):
    cluster = ClusterFactory()
    assert "New Host" in admin_client.get(reverse("vms:host_new"), headers=HX).content.decode()
    response = admin_client.post(
        reverse("vms:host_new"),
        {"name": "node9", "uri": "qemu+ssh://root@n9/system", "cluster": cluster.pk},
        headers=HX,
    )
    assert_messages(response, "success", "Host node9 added; connecting.")
    host = Host.objects.get(name="node9")
    assert (host.status, host.uri, host.cluster) == (
        HostStatus.CONNECTING,
        "qemu+ssh://root@n9/system",
        cluster,
    )
    assert Event.objects.filter(host=host, action="add_host").exists()


# ---- Clusters ------------------------------------------------------------------------------


def test_cluster_list(admin_client):
    cluster = ClusterFactory(name="prod", shutdown_reason_enabled=True, shutdown_timeout=90)
    for response in (
        admin_client.get(reverse("vms:clusters")),
        admin_client.get(reverse("vms:clusters"), headers=HX),
    ):
        html = response.content.decode()
        assert (
            "prod" in html
            and cluster.data_center.name in html
            and "Enabled" in html
            and "90 s" in html
        )
        assert reverse("vms:cluster_edit", args=[cluster.pk]) in html


def test_cluster_edit_window_toggles_reason_and_timeout(admin_client):
    cluster = ClusterFactory(name="prod", shutdown_timeout=120)
    window = admin_client.get(reverse("vms:cluster_edit", args=[cluster.pk]), headers=HX)
    assert window.status_code == 200
    assert (
        "Edit Cluster: prod" in window.content.decode() and 'value="120"' in window.content.decode()
    )
    response = admin_client.post(
        reverse("vms:cluster_edit", args=[cluster.pk]),
        {
            "name": "prod",
            "description": "d",
            "shutdown_reason_enabled": "on",
            "shutdown_timeout": 30,
        },
        headers=HX,
    )
    assert_messages(response, "success", "Cluster prod saved.")
    cluster.refresh_from_db()
    assert (cluster.shutdown_reason_enabled, cluster.shutdown_timeout, cluster.description) == (
        True,
        30,
        "d",
    )
    # And back off (an unchecked box is absent from the POST).
    admin_client.post(
        reverse("vms:cluster_edit", args=[cluster.pk]),
        {"name": "prod", "shutdown_timeout": 60},
        headers=HX,
    )
    cluster.refresh_from_db()
    assert (cluster.shutdown_reason_enabled, cluster.shutdown_timeout) == (False, 60)


@pytest.mark.parametrize(
    "timeout,error",
    [
        (2, "Graceful shutdown timeout must be between 5 and 3,600 seconds."),
        (4000, "Graceful shutdown timeout must be between 5 and 3,600 seconds."),
        (-1, "Graceful shutdown timeout must be between 5 and 3,600 seconds."),
        ("soon", "Enter a whole number."),
        ("", "This field is required."),
    ],
)
def test_cluster_edit_bad_timeout_shows_error(admin_client, timeout, error):
    cluster = ClusterFactory(name="prod", shutdown_timeout=120)
    response = admin_client.post(
        reverse("vms:cluster_edit", args=[cluster.pk]),
        {"name": "prod", "shutdown_reason_enabled": "on", "shutdown_timeout": timeout},
        headers=HX,
    )
    assert response.status_code == 200
    assert "HX-Retarget" not in response
    assert error in response.content.decode()
    cluster.refresh_from_db()
    assert (cluster.shutdown_reason_enabled, cluster.shutdown_timeout) == (False, 120)
    assert Cluster.objects.count() == 1


# ---- End to end through a real worker -------------------------------------------------------


def test_run_then_shutdown_through_the_worker(admin_client, sync_hosts, work):
    vm = VMFactory(name="e2e", status=S.DOWN)
    DiskFactory(vm=vm)
    sync_hosts(vm.host)
    response = work(lambda: admin_client.post(action_url("run", vm), headers=HX))
    assert_messages(response, "success", "Run: e2e requested.")
    vm.refresh_from_db()
    assert vm.status == S.UP and vm.started_at is not None, list(
        Job.objects.values("status", "error", "rq_id")
    )
    assert row_actions(admin_client.get(reverse("vms:list")))["e2e"] == EXPECTED_ACTIONS[S.UP]
    work(lambda: admin_client.post(action_url("shutdown", vm), headers=HX))
    vm.refresh_from_db()
    assert vm.status == S.DOWN, list(Job.objects.values("kind", "status", "error"))
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
