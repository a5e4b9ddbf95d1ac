"""The Data Centers, Clusters and Hosts tabs' windows: New, Edit, Remove, Maintenance and
Activate, each tried anonymous, without permission, permitted, and permitted elsewhere; and
what the tabs' rows show."""

import pytest
from django.test import Client
from django.urls import reverse
from factories import (
    ClusterFactory,
    DataCenterFactory,
    HostFactory,
    UserFactory,
    VMFactory,
    grant,
)
from helpers import HX, assert_messages, html_find, html_one, html_text

from portal.kernel.models import Event
from vms.choices import HostStatus, VMStatus
from vms.models import Cluster, DataCenter, Host

pytestmark = pytest.mark.django_db


def client_of(role: str, obj) -> Client:
    """A client logged in as a user holding `role` on `obj` alone."""
    user = UserFactory()
    grant(user, role, obj)
    client = Client()
    client.force_login(user)
    return client


def windows(host: Host) -> dict[str, str]:
    """Each object window of the tabs, on the objects under `host`."""
    cluster, dc = host.cluster, host.cluster.data_center
    return {
        "datacenter_edit": reverse("vms:datacenter_edit", args=[dc.pk]),
        "datacenter_remove": reverse("vms:datacenter_remove", args=[dc.pk]),
        "cluster_remove": reverse("vms:cluster_remove", args=[cluster.pk]),
        "host_edit": reverse("vms:host_edit", args=[host.pk]),
        "host_remove": reverse("vms:host_remove", args=[host.pk]),
        "host_maintenance": reverse("vms:host_maintenance", args=[host.pk]),
        "host_activate": reverse("vms:host_activate", args=[host.pk]),
    }


# -- the four ways ------------------------------------------------------------------------


def test_windows_need_a_login(client):
    host = HostFactory()
    for url in [*windows(host).values(), reverse("vms:datacenter_new"), reverse("vms:cluster_new")]:
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/login/"), url
        response = client.post(url, {})
        assert response.status_code == 302 and response.url.startswith("/login/"), url
    assert Host.objects.filter(pk=host.pk).exists()


def test_windows_are_404_without_permission(user_client):
    """An administrator of something else: the objects are out of reach."""
    host = HostFactory(status=HostStatus.MAINTENANCE)
    for url in [*windows(host).values(), reverse("vms:datacenter_new"), reverse("vms:cluster_new")]:
        assert user_client.get(url, headers=HX).status_code == 404, url
        assert user_client.post(url, {"name": "x"}, headers=HX).status_code == 404, url
    assert Host.objects.get(pk=host.pk).status == HostStatus.MAINTENANCE
    assert DataCenter.objects.count() == 2  # the test's and the user's own


def test_windows_open_for_a_permitted_administrator(admin_client):
    host = HostFactory(name="node1")
    titles = {
        "datacenter_edit": "Edit Data Center",
        "datacenter_remove": "Remove Data Center(s)",
        "cluster_remove": "Remove Cluster(s)",
        "host_edit": "Edit Host: node1",
        "host_remove": "Remove Host(s)",
        "host_maintenance": "Maintenance Host(s)",
        "host_activate": "Activate Host(s)",
    }
    for key, url in windows(host).items():
        response = admin_client.get(url, headers=HX)
        assert response.status_code == 200, url
        assert titles[key] in html_text(html_one(response, "form.dialog h2")), key
    for url, title in [
        (reverse("vms:datacenter_new"), "New Data Center"),
        (reverse("vms:cluster_new"), "New Cluster"),
    ]:
        assert html_text(html_one(admin_client.get(url, headers=HX), "form.dialog h2")) == title


def test_cluster_admin_acts_on_its_cluster_and_nothing_else():
    """ClusterAdmin on a cluster: its hosts' windows and its own Remove; the data center
    above it and another cluster's hosts are out of reach."""
    host = HostFactory(name="node1")
    elsewhere = HostFactory(name="node2")
    client = client_of("ClusterAdmin", host.cluster)
    mine = windows(host)
    for key in ("host_edit", "host_remove", "host_maintenance", "host_activate", "cluster_remove"):
        assert client.get(mine[key], headers=HX).status_code == 200, key
    for key in ("datacenter_edit", "datacenter_remove"):
        assert client.get(mine[key], headers=HX).status_code == 404, key
    for url in windows(elsewhere).values():
        assert client.get(url, headers=HX).status_code == 404, url
    response = client.post(windows(elsewhere)["host_maintenance"], headers=HX)
    assert response.status_code == 404
    assert Host.objects.get(pk=elsewhere.pk).status == HostStatus.UP
    # No data center where it may create clusters (a grant on a cluster is below it).
    assert client.get(reverse("vms:cluster_new"), headers=HX).status_code == 404
    assert client.get(reverse("vms:datacenter_new"), headers=HX).status_code == 404


def test_host_admin_on_a_host_may_not_edit_its_cluster():
    host = HostFactory()
    client = client_of("HostAdmin", host)
    assert client.get(windows(host)["host_maintenance"], headers=HX).status_code == 200
    assert client.get(windows(host)["cluster_remove"], headers=HX).status_code == 404
    response = client.post(windows(host)["host_maintenance"], headers=HX)
    assert_messages(response, "success", f"Host {host.name} was moved to Maintenance.")


# -- data centers -------------------------------------------------------------------------


def test_new_data_center_from_the_window(admin_client):
    response = admin_client.post(
        reverse("vms:datacenter_new"), {"name": "Lab", "description": "the lab"}, headers=HX
    )
    assert_messages(response, "success", "Data center Lab created.")
    assert DataCenter.objects.get(name="Lab").description == "the lab"
    page = admin_client.get(reverse("vms:datacenters"))
    assert [html_text(h) for h in html_find(page, ".dc-head h2")] == ["Lab"]
    buttons = [b.get("data-action") for b in html_find(page, ".dc-head button[data-action]")]
    assert buttons == ["edit", "remove"]
    assert html_find(page, f"#datacenter-toolbar button[hx-get='{reverse('vms:datacenter_new')}']")


def test_new_data_center_refusal_keeps_the_window_open(admin_client):
    DataCenterFactory(name="Lab")
    response = admin_client.post(reverse("vms:datacenter_new"), {"name": "LAB"}, headers=HX)
    assert response.status_code == 200 and "HX-Retarget" not in response
    assert html_text(html_one(response, "p.error")) == (
        "Name 'LAB' is already used by another data center."
    )
    assert DataCenter.objects.count() == 1


def test_edit_and_remove_data_center(admin_client):
    dc = DataCenterFactory(name="Lab")
    url = reverse("vms:datacenter_edit", args=[dc.pk])
    assert 'value="Lab"' in admin_client.get(url, headers=HX).content.decode()
    response = admin_client.post(url, {"name": "Lab2", "description": "d"}, headers=HX)
    assert_messages(response, "success", "Data center Lab2 saved.")
    ClusterFactory(name="c1", data_center=dc)
    url = reverse("vms:datacenter_remove", args=[dc.pk])
    assert "Lab2" in admin_client.get(url, headers=HX).content.decode()
    response = admin_client.post(url, headers=HX)
    assert_messages(
        response,
        "error",
        "Cannot remove data center Lab2: it still holds clusters (c1). Remove them first.",
    )
    Cluster.objects.all().delete()
    response = admin_client.post(url, headers=HX)
    assert_messages(response, "success", "Data center Lab2 removed.")
    assert not DataCenter.objects.exists()


def test_data_centers_page_follows_live_topics(admin_client):
    DataCenterFactory(name="Lab")
    page = admin_client.get(reverse("vms:datacenters"))
    live = html_one(page, "#datacenter-results")
    assert set(live.get("data-live").split()) >= {"datacenters", "clusters"}
    assert live.get("hx-select") == "#datacenter-results"
    # Its buttons (Edit, Remove, Permissions) answer with windows, not with the list.
    assert live.get("hx-disinherit") == "hx-select"


# -- clusters -----------------------------------------------------------------------------


def test_new_cluster_in_a_data_center_the_user_may_create_clusters_in():
    dc = DataCenterFactory(name="mine")
    other = DataCenterFactory(name="theirs")
    client = client_of("DataCenterAdmin", dc)
    window = client.get(reverse("vms:cluster_new"), headers=HX)
    options = [html_text(o) for o in html_find(window, "select[name=data_center] option")]
    assert options == ["mine"]
    data = {"name": "prod", "data_center": other.pk, "shutdown_timeout": 60}
    response = client.post(reverse("vms:cluster_new"), data, headers=HX)
    assert "Select a valid choice" in response.content.decode()
    assert not Cluster.objects.exists()
    response = client.post(reverse("vms:cluster_new"), {**data, "data_center": dc.pk}, headers=HX)
    assert_messages(response, "success", "Cluster prod created.")
    assert Cluster.objects.get().data_center == dc


def test_cluster_list_rows_and_remove(admin_client):
    cluster = ClusterFactory(name="prod")
    VMFactory(name="web1", host=HostFactory(cluster=cluster, name="node1"))
    page = admin_client.get(reverse("vms:clusters"))
    assert [b.get("data-action") for b in html_find(page, "#cluster-results button")] == [
        "edit",
        "remove",
    ]
    assert html_find(page, f"#cluster-toolbar button[hx-get='{reverse('vms:cluster_new')}']")
    response = admin_client.post(reverse("vms:cluster_remove", args=[cluster.pk]), headers=HX)
    assert_messages(
        response,
        "error",
        "Cannot remove cluster prod: it still holds hosts (node1); virtual machines (web1). "
        "Remove or move them first.",
    )
    assert Cluster.objects.filter(pk=cluster.pk).exists()


# -- hosts --------------------------------------------------------------------------------


def test_host_row_shows_what_libvirt_reports_and_its_buttons(admin_client):
    HostFactory(
        name="node1",
        cpu_model="Skylake-Client-IBRS",
        cores=8,
        cpus=16,
        memory_mb=32768,
        libvirt_version="9.0.0",
        hypervisor_version="7.2.0",
    )
    page = admin_client.get(reverse("vms:hosts"))
    row = html_one(page, "#host-results tbody tr")
    assert html_text(html_one(row, ".cpu-model")) == "Skylake-Client-IBRS"
    assert html_text(html_one(row, ".cores")) == "8"
    assert html_text(html_one(row, ".libvirt-version")) == "9.0.0"
    assert html_text(html_one(row, ".qemu-version")) == "7.2.0"
    assert "32768 MB" in html_text(row)
    buttons = {b.get("data-action"): b.get("disabled") is None for b in html_find(row, "button")}
    # Up: Edit and Maintenance; Remove and Activate wait for Maintenance; Confirm 'Host has
    # been Rebooted' for Non Responsive.
    assert buttons == {
        "edit": True,
        "remove": False,
        "maintenance": True,
        "activate": False,
        "confirm_rebooted": False,
    }


def test_host_maintenance_activate_and_remove_from_the_windows(admin_client):
    host = HostFactory(name="node1")
    vm = VMFactory(name="web1", host=host, status=VMStatus.UP)
    url = reverse("vms:host_maintenance", args=[host.pk])
    response = admin_client.post(url, headers=HX)
    assert_messages(
        response,
        "success",
        "Host node1 is Preparing For Maintenance: its VMs are being migrated away.",
    )
    assert Host.objects.get(pk=host.pk).status == HostStatus.PREPARING_FOR_MAINTENANCE
    Host.objects.filter(pk=host.pk).update(status=HostStatus.UP)
    vm.status = VMStatus.DOWN
    vm.save()
    assert_messages(
        admin_client.post(url, headers=HX), "success", "Host node1 was moved to Maintenance."
    )
    row = html_one(admin_client.get(reverse("vms:hosts")), "#host-results tbody tr")
    assert "Maintenance" in html_text(row)
    buttons = {b.get("data-action"): b.get("disabled") is None for b in html_find(row, "button")}
    assert buttons == {
        "edit": True,
        "remove": True,
        "maintenance": False,
        "activate": True,
        "confirm_rebooted": False,
    }
    response = admin_client.post(reverse("vms:host_remove", args=[host.pk]), headers=HX)
    assert_messages(
        response,
        "error",
        "Cannot remove host node1: it still holds virtual machines (web1). "
        "Remove or move them first.",
    )
    response = admin_client.post(reverse("vms:host_activate", args=[host.pk]), headers=HX)
    assert_messages(response, "success", "Activating host node1.")
    assert Host.objects.get(pk=host.pk).status == HostStatus.CONNECTING
    vm.delete()
    Host.objects.filter(pk=host.pk).update(status=HostStatus.MAINTENANCE)
    response = admin_client.post(reverse("vms:host_remove", args=[host.pk]), headers=HX)
    assert_messages(response, "success", "Host node1 removed.")
    assert not Host.objects.exists()
    assert Event.objects.filter(action="host_remove").exists()


def test_edit_host_offers_clusters_where_the_user_may_add_hosts():
    host = HostFactory(name="node1", status=HostStatus.MAINTENANCE)
    near = ClusterFactory(name="near", data_center=host.cluster.data_center)
    far = ClusterFactory(name="far")
    user = UserFactory()
    grant(user, "HostAdmin", host)
    grant(user, "ClusterAdmin", near)
    client = Client()
    client.force_login(user)
    url = reverse("vms:host_edit", args=[host.pk])
    window = client.get(url, headers=HX)
    options = {
        html_text(o).split(" (")[0] for o in html_find(window, "select[name=cluster] option")
    }
    assert options == {host.cluster.name, "near"}
    response = client.post(url, {"name": "node1", "cluster": far.pk}, headers=HX)
    assert "Select a valid choice" in response.content.decode()
    response = client.post(url, {"name": "node1b", "cluster": near.pk}, headers=HX)
    assert_messages(response, "success", "Host node1b saved.")
    assert Host.objects.get(pk=host.pk).cluster == near
