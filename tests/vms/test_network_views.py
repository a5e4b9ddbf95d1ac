"""The Networks page of a data center, its windows, and a VM's Network Interfaces sub-tab and
windows, each tried anonymous, with no permission, permitted, and permitted elsewhere (the
permission matrix tries every role at every scope); what they show and what OK does."""

import pytest
from django.test import Client
from django.urls import reverse
from factories import (
    DataCenterFactory,
    HostFactory,
    NetworkFactory,
    NicFactory,
    UserFactory,
    VMFactory,
    grant,
    profile_of,
)
from helpers import HX, html_find, html_text

from vms.models import Network, NetworkInterface

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(sync_hosts):
    dc = DataCenterFactory(name="paris")
    network = NetworkFactory(name="blue", data_center=dc, ipv4="", vlan=None)
    vm = VMFactory(name="web1", host=HostFactory(cluster__data_center=dc))
    nic = NicFactory(vm=vm, profile=profile_of(network), mac="02:00:00:00:01:01")
    sync_hosts(vm.host)
    return {"dc": dc, "network": network, "vm": vm, "nic": nic}


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_networks_page_four_ways(world, admin_client, user_client, django_assert_max_num_queries):
    url = reverse("vms:networks", args=[world["dc"].pk])
    assert Client().get(url).url.startswith("/login/")
    assert user_client.get(url).status_code == 404  # NetworkAdmin elsewhere
    with django_assert_max_num_queries(20):
        page = admin_client.get(url)
    assert page.status_code == 200
    assert "blue" in html_text(html_find(page, "table.networks")[0])
    admin = UserFactory()
    grant(admin, "NetworkAdmin", world["dc"])
    assert client_of(admin).get(url).status_code == 200
    # NetworkAdmin on the network alone: its windows, not the data center's page.
    one = UserFactory()
    grant(one, "NetworkAdmin", world["network"])
    assert client_of(one).get(url).status_code == 404
    edit = reverse("vms:network_edit", args=[world["network"].pk])
    assert client_of(one).get(edit).status_code == 200
    elsewhere = UserFactory()
    grant(elsewhere, "NetworkAdmin", DataCenterFactory())
    assert client_of(elsewhere).get(url).status_code == 404


def test_the_networks_tab_reaches_a_network_without_its_data_center(world):
    """NetworkAdmin on one network: the Networks tab lists it (with its data center), with
    Edit, Remove and its vNIC Profiles, and nothing else; someone else's list stays empty."""
    NetworkFactory(name="green", data_center=world["dc"])
    NetworkFactory(name="red", data_center=DataCenterFactory(name="berlin"))
    url = reverse("vms:networks_all")
    one = UserFactory()
    grant(one, "NetworkAdmin", world["network"])
    page = client_of(one).get(url)
    assert page.status_code == 200
    rows = [html_text(r) for r in html_find(page, "table.networks tbody tr")]
    assert len(rows) == 1 and rows[0].startswith("paris blue")
    assert "Edit" in rows[0] and "Remove" in rows[0] and "vNIC Profiles" in rows[0]
    assert 'class="active">Networks' in page.content.decode()
    partial = client_of(one).get(url, headers=HX)
    (row,) = html_find(partial, "table.networks tbody tr")
    assert "paris" in html_text(row) and "blue" in html_text(row)
    profiles = reverse("vms:network_profiles", args=[world["network"].pk])
    assert client_of(one).get(profiles).status_code == 200
    other = UserFactory()
    grant(other, "NetworkAdmin", DataCenterFactory())
    rows = html_find(client_of(other).get(url), "table.networks tbody tr")
    assert [html_text(r) for r in rows] == ["No logical networks."]


def test_network_windows_create_and_refuse(world, admin_client, work):
    url = reverse("vms:network_new", args=[world["dc"].pk])
    form = {"name": "green", "description": "", "vm_network": "on", "kind": "isolated"}
    bad = admin_client.post(
        url, {**form, "kind": "bridge", "bridge": "br0", "vlan": 5000}, headers=HX
    )
    assert "VLAN tag must be between 0 and 4094" in bad.content.decode()
    assert not Network.objects.filter(name="green").exists()
    done = work(lambda: admin_client.post(url, form, headers=HX))
    assert "Creating logical network green" in done.content.decode()
    assert Network.objects.get(name="green").profiles.get().name == "green"
    in_use = admin_client.post(
        reverse("vms:network_remove", args=[world["network"].pk]), headers=HX
    )
    assert "web1" in in_use.content.decode() and Network.objects.filter(name="blue").exists()


def test_vnic_profiles_pane(world, admin_client):
    page = admin_client.get(reverse("vms:network_profiles", args=[world["network"].pk]))
    assert page.status_code == 200
    assert [
        html_text(r.cssselect("td")[0]) for r in html_find(page, "table.vnic-profiles tbody tr")
    ] == ["blue"]


def test_vm_network_interfaces_sub_tab(world, admin_client, user_client):
    url = reverse("vms:details", args=[world["vm"].pk, "nics"])
    assert user_client.get(url).status_code == 404
    pane = admin_client.get(url)
    text = html_text(html_find(pane, "table.nic-list")[0])
    assert "nic1" in text and "02:00:00:00:01:01" in text and "blue" in text
    assert "Network Interfaces" in pane.content.decode()


def test_nic_windows_four_ways(world, admin_client, user_client):
    vm, nic = world["vm"], world["nic"]
    url = reverse("vms:nic_new", args=[vm.pk])
    assert Client().get(url).url.startswith("/login/")
    assert user_client.get(url).status_code == 404
    assert admin_client.get(url).status_code == 200
    owner = UserFactory()
    grant(owner, "UserVmEngine", vm)
    window = client_of(owner).get(url)
    assert window.status_code == 200
    # No VnicProfileUser on any profile: nothing to pick, and a posted profile is refused.
    assert html_find(window, "select[name=profile] option") == []
    data = {"profile": profile_of(world["network"]).pk, "model": "virtio", "link_state": "up"}
    client_of(owner).post(url, {**data, "card_status": "plugged"}, headers=HX)
    assert NetworkInterface.objects.filter(vm=vm).count() == 1
    elsewhere = UserFactory()
    grant(elsewhere, "UserVmEngine", VMFactory())
    assert client_of(elsewhere).get(url).status_code == 404
    other_vm_nic = NicFactory()
    assert (
        admin_client.get(reverse("vms:nic_edit", args=[vm.pk, other_vm_nic.pk])).status_code == 404
    )
    assert admin_client.get(reverse("vms:nic_edit", args=[vm.pk, nic.pk])).status_code == 200


def test_nic_window_refuses_a_mac_in_use(world, admin_client):
    vm = VMFactory(cluster=world["vm"].cluster, host=world["vm"].host)
    data = {
        "profile": profile_of(world["network"]).pk,
        "model": "virtio",
        "mac": "02:00:00:00:01:01",
        "link_state": "up",
        "card_status": "plugged",
    }
    answer = admin_client.post(reverse("vms:nic_new", args=[vm.pk]), data, headers=HX)
    assert "already in use by nic1 of VM web1" in answer.content.decode()
    assert not NetworkInterface.objects.filter(vm=vm).exists()


def test_new_vm_window_offers_only_usable_profiles(world, sync_hosts):
    creator = UserFactory()
    grant(creator, "PowerUserRole", world["dc"])
    window = client_of(creator).get(reverse("vms:new"))
    options = [html_text(o) for o in html_find(window, "select[name=profile] option")]
    assert options == ["(no network interface)"]
    grant(creator, "VnicProfileUser", profile_of(world["network"]))
    window = client_of(creator).get(reverse("vms:new"))
    options = [html_text(o) for o in html_find(window, "select[name=profile] option")]
    assert options == ["(no network interface)", "blue/blue (paris)"]
