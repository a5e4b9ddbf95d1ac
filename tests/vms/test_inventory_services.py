"""vms.inventory: New, Edit and Remove of data centers, clusters and hosts, and a host's
Maintenance and Activate. Every refusal changes nothing and says why."""

import threading

import pytest
from django.db import connections, transaction
from factories import (
    ClusterFactory,
    DataCenterFactory,
    DiskFactory,
    HostFactory,
    StorageDomainFactory,
    UserFactory,
    VMFactory,
    grant,
)
from guardian.models import UserObjectPermission

from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event
from vms import inventory, services
from vms.choices import HostStatus, VMStatus
from vms.models import Cluster, DataCenter, Host, Network, Template, VirtualMachine

pytestmark = pytest.mark.django_db


def rows(model) -> list[tuple]:
    """Every row of `model` as it stands (to show a refusal changed nothing)."""
    return sorted(model.objects.values_list(), key=str)


# -- data centers --------------------------------------------------------------------------


def test_datacenter_create_edit_remove(admin):
    dc = inventory.datacenter_create(user=admin, name=" Lab ", description="the lab")
    assert (dc.name, dc.description) == ("Lab", "the lab")
    assert Event.objects.get(action="datacenter_create").message == (
        f"{admin.username} created data center Lab."
    )
    dc = inventory.datacenter_update(datacenter_id=dc.pk, user=admin, name="Lab2", description="")
    assert DataCenter.objects.get(pk=dc.pk).name == "Lab2"
    assert Event.objects.get(action="datacenter_edit").message.endswith("Lab2 (was Lab).")
    assert inventory.datacenter_remove(datacenter_id=dc.pk, user=admin) == "Lab2"
    assert not DataCenter.objects.exists()
    assert Event.objects.get(action="datacenter_remove").object_name == "Lab2"


@pytest.mark.parametrize(
    "name,error",
    [
        ("", "Name is required."),
        ("   ", "Name is required."),
        ("x" * 256, "Name is too long: 256 characters, at most 255."),
        ("bad\x00name", "Name contains a control character (U+0000)"),
        ("tab\tname", "Name contains a control character (U+0009)"),
        ("default", "Name 'default' is already used by another data center."),
        ("DEFAULT", "Name 'DEFAULT' is already used by another data center."),
    ],
)
def test_datacenter_create_refuses_bad_names(admin, name, error):
    DataCenterFactory(name="Default")
    before = rows(DataCenter)
    with pytest.raises(ActionRefused) as exc:
        inventory.datacenter_create(user=admin, name=name)
    assert str(exc.value).startswith(error)
    assert rows(DataCenter) == before
    assert not Event.objects.exists()


def test_datacenter_create_refuses_control_characters_in_the_description(admin):
    with pytest.raises(ActionRefused, match="Description contains a control character"):
        inventory.datacenter_create(user=admin, name="dc", description="a\x07b")
    with pytest.raises(ActionRefused, match="Description is too long"):
        inventory.datacenter_create(user=admin, name="dc", description="d" * 1001)
    assert not DataCenter.objects.exists()


def test_datacenter_update_refuses_a_taken_name_and_a_missing_one(admin):
    DataCenterFactory(name="Default")
    dc = DataCenterFactory(name="Lab")
    with pytest.raises(ActionRefused, match="already used by another data center"):
        inventory.datacenter_update(datacenter_id=dc.pk, user=admin, name="default")
    # Its own name in another case is no clash.
    inventory.datacenter_update(datacenter_id=dc.pk, user=admin, name="LAB")
    with pytest.raises(ActionRefused, match="does not exist any more"):
        inventory.datacenter_update(datacenter_id=dc.pk + 100, user=admin, name="x")
    assert sorted(DataCenter.objects.values_list("name", flat=True)) == ["Default", "LAB"]


@pytest.mark.django_db(transaction=True)
def test_two_requests_creating_the_same_data_center_name_one_wins(admin):
    """The first has made "Racing" and not committed yet: the second's check sees nothing,
    its insert waits on the unique index of the lower-cased name, and once the first commits
    it is refused with the same message as a plain clash."""
    made, commit = threading.Event(), threading.Event()
    outcome = {}

    def first():
        try:
            with transaction.atomic():
                inventory.datacenter_create(user=admin, name="Racing")
                made.set()
                commit.wait(10)
        finally:
            connections.close_all()

    def second():
        try:
            inventory.datacenter_create(user=admin, name="RACING")
            outcome["second"] = "created"
        except ActionRefused as exc:
            outcome["second"] = str(exc)
        finally:
            connections.close_all()

    winner = threading.Thread(target=first)
    winner.start()
    assert made.wait(10)
    loser = threading.Thread(target=second)
    loser.start()
    loser.join(0.5)
    assert loser.is_alive(), "the second insert did not wait for the first"
    commit.set()
    winner.join(10)
    loser.join(10)
    assert outcome["second"] == "Name 'RACING' is already used by another data center."
    assert list(DataCenter.objects.values_list("name", flat=True)) == ["Racing"]


def test_datacenter_remove_names_what_is_in_the_way(admin):
    dc = DataCenterFactory(name="dc1")
    ClusterFactory(name="c1", data_center=dc)
    ClusterFactory(name="c2", data_center=dc)
    StorageDomainFactory(name="data1", data_center=dc)
    Network.objects.create(name="ovirtmgmt", data_center=dc)
    Template.objects.create(name="tpl", data_center=dc)
    with pytest.raises(ActionRefused) as exc:
        inventory.datacenter_remove(datacenter_id=dc.pk, user=admin)
    assert str(exc.value) == (
        "Cannot remove data center dc1: it still holds clusters (c1, c2); storage domains "
        "(data1); logical networks (ovirtmgmt); templates (tpl). Remove them first."
    )
    assert DataCenter.objects.filter(pk=dc.pk).exists()
    Cluster.objects.all().delete()
    Template.objects.all().delete()
    with pytest.raises(ActionRefused) as exc:
        inventory.datacenter_remove(datacenter_id=dc.pk, user=admin)
    assert "it still holds storage domains (data1); logical networks" in str(exc.value)


def test_datacenter_remove_lists_at_most_five_of_a_kind(admin):
    dc = DataCenterFactory(name="dc1")
    for n in range(7):
        ClusterFactory(name=f"c{n}", data_center=dc)
    with pytest.raises(ActionRefused, match=r"clusters \(c0, c1, c2, c3, c4 and 2 more\)"):
        inventory.datacenter_remove(datacenter_id=dc.pk, user=admin)


def test_datacenter_remove_drops_the_permissions_given_on_it(admin):
    dc = DataCenterFactory()
    grant(UserFactory(), "DataCenterAdmin", dc)
    inventory.datacenter_remove(datacenter_id=dc.pk, user=admin)
    assert not UserObjectPermission.objects.filter(object_pk=str(dc.pk)).exists()
    with pytest.raises(ActionRefused, match="does not exist any more"):
        inventory.datacenter_remove(datacenter_id=dc.pk, user=admin)


# -- clusters -----------------------------------------------------------------------------


def test_cluster_create_and_remove(admin):
    dc = DataCenterFactory(name="dc1")
    cluster = inventory.cluster_create(
        user=admin,
        name="prod",
        data_center_id=dc.pk,
        description="d",
        shutdown_reason_enabled=True,
        shutdown_timeout=60,
    )
    cluster.refresh_from_db()
    assert (cluster.data_center, cluster.shutdown_reason_enabled, cluster.shutdown_timeout) == (
        dc,
        True,
        60,
    )
    assert Event.objects.get(action="cluster_create").message == (
        f"{admin.username} created cluster prod in data center dc1."
    )
    # The same name in another data center is another cluster.
    inventory.cluster_create(user=admin, name="PROD", data_center_id=DataCenterFactory().pk)
    assert inventory.cluster_remove(cluster_id=cluster.pk, user=admin) == "prod"
    assert not Cluster.objects.filter(pk=cluster.pk).exists()


@pytest.mark.parametrize(
    "fields,error",
    [
        ({"name": "Prod"}, "Name 'Prod' is already used by another cluster in this data center."),
        ({"name": "x" * 256}, "Name is too long"),
        ({"name": "a\x1bb"}, "Name contains a control character (U+001B)"),
        ({"name": ""}, "Name is required."),
        ({"shutdown_timeout": 4}, "Graceful shutdown timeout must be between 5 and 3,600"),
        ({"data_center_id": 0}, "That data center does not exist any more."),
    ],
)
def test_cluster_create_refusals(admin, fields, error):
    existing = ClusterFactory(name="prod")
    before = rows(Cluster)
    args = {"name": "new", "data_center_id": existing.data_center_id, **fields}
    with pytest.raises(ActionRefused) as exc:
        inventory.cluster_create(user=admin, **args)
    assert str(exc.value).startswith(error)
    assert rows(Cluster) == before


def test_cluster_update_renames_within_its_data_center(admin):
    cluster = ClusterFactory(name="a")
    ClusterFactory(name="b", data_center=cluster.data_center)
    with pytest.raises(ActionRefused, match="Name 'B' is already used by another cluster"):
        services.cluster_update(
            cluster_id=cluster.pk,
            user=admin,
            name="B",
            shutdown_reason_enabled=False,
            shutdown_timeout=60,
        )
    assert Cluster.objects.get(pk=cluster.pk).name == "a"
    services.cluster_update(
        cluster_id=cluster.pk,
        user=admin,
        name="c",
        shutdown_reason_enabled=False,
        shutdown_timeout=9,
    )
    assert Cluster.objects.get(pk=cluster.pk).name == "c"
    with pytest.raises(ActionRefused, match="does not exist any more"):
        services.cluster_update(
            cluster_id=0, user=admin, name="c", shutdown_reason_enabled=False, shutdown_timeout=9
        )


def test_cluster_remove_names_what_is_in_the_way(admin):
    host = HostFactory(name="node1")
    cluster = host.cluster
    VMFactory(name="web1", host=host)
    with pytest.raises(ActionRefused) as exc:
        inventory.cluster_remove(cluster_id=cluster.pk, user=admin)
    assert str(exc.value) == (
        f"Cannot remove cluster {cluster.name}: it still holds hosts (node1); virtual machines "
        "(web1). Remove or move them first."
    )
    VirtualMachine.objects.all().delete()
    with pytest.raises(ActionRefused, match=r"it still holds hosts \(node1\)\. Remove"):
        inventory.cluster_remove(cluster_id=cluster.pk, user=admin)
    assert Cluster.objects.filter(pk=cluster.pk).exists()


# -- hosts --------------------------------------------------------------------------------


def test_host_maintenance_and_activate(admin):
    host = HostFactory(name="node1", status=HostStatus.UP)
    VMFactory(host=host, status=VMStatus.DOWN)
    VMFactory(host=host, status=VMStatus.SUSPENDED)
    inventory.host_maintenance(host_id=host.pk, user=admin)
    assert Host.objects.get(pk=host.pk).status == HostStatus.MAINTENANCE
    assert Event.objects.get(action="host_maintenance").message == (
        f"{admin.username} moved host node1 to Maintenance (was Up)."
    )
    with pytest.raises(
        ActionRefused, match="Cannot move host node1 to Maintenance: it is Maintenance already."
    ):
        inventory.host_maintenance(host_id=host.pk, user=admin)
    inventory.host_activate(host_id=host.pk, user=admin)
    assert Host.objects.get(pk=host.pk).status == HostStatus.CONNECTING
    with pytest.raises(ActionRefused, match="Cannot activate host node1: it is Connecting"):
        inventory.host_activate(host_id=host.pk, user=admin)


@pytest.mark.parametrize(
    "status", [VMStatus.UP, VMStatus.PAUSED, VMStatus.POWERING_UP, VMStatus.UNKNOWN]
)
def test_maintenance_with_vms_on_the_host_is_preparing_for_maintenance(admin, status):
    host = HostFactory(name="node1")
    VMFactory(name="web1", host=host, status=status)
    VMFactory(name="db1", host=host, status=VMStatus.DOWN)
    inventory.host_maintenance(host_id=host.pk, user=admin)
    assert Host.objects.get(pk=host.pk).status == HostStatus.PREPARING_FOR_MAINTENANCE
    assert Event.objects.get(action="host_maintenance").message == (
        f"{admin.username} moved host node1 to Maintenance: it is Preparing For Maintenance, "
        "migrating 1 VM away."
    )


@pytest.mark.parametrize("host_status", [HostStatus.NON_RESPONSIVE, HostStatus.CONNECTING])
def test_maintenance_of_a_host_not_up_with_vms_on_it_is_refused(admin, host_status):
    host = HostFactory(name="node1", status=host_status)
    VMFactory(name="web1", host=host, status=VMStatus.UNKNOWN)
    with pytest.raises(ActionRefused) as exc:
        inventory.host_maintenance(host_id=host.pk, user=admin)
    assert str(exc.value) == (
        f"Cannot move host node1 to Maintenance: it is {HostStatus(host_status).label}, so its "
        "virtual machines cannot be migrated away: web1 (Unknown)."
    )
    assert Host.objects.get(pk=host.pk).status == host_status
    assert not Event.objects.exists()


def test_a_host_in_maintenance_gets_no_new_vm_and_runs_none(admin):
    host = HostFactory(name="node1")
    down = VMFactory(host=host, status=VMStatus.DOWN)
    inventory.host_maintenance(host_id=host.pk, user=admin)
    with pytest.raises(ActionRefused, match="its host node1 is Maintenance"):
        services.vm_run(vm_id=down.pk, user=admin)
    with pytest.raises(ActionRefused, match="No host in cluster .* node1: the host is Maintenance"):
        services._place_new_vm(host.cluster, memory_mb=512, vcpus=1)
    assert VirtualMachine.objects.get(pk=down.pk).status == VMStatus.DOWN


def test_maintenance_lost_to_another_request_changes_nothing(admin, monkeypatch):
    """Two admins: the other one's change lands between this one's read and its conditional
    update (as without the row lock): this one is refused and says what the host is now."""
    host = HostFactory(name="node1")
    real = inventory._host_locked

    def read_then_lose(host_id):
        read = real(host_id)
        Host.objects.filter(pk=host_id).update(status=HostStatus.NON_RESPONSIVE)
        return read

    monkeypatch.setattr(inventory, "_host_locked", read_then_lose)
    with pytest.raises(ActionRefused) as exc:
        inventory.host_maintenance(host_id=host.pk, user=admin)
    assert str(exc.value) == (
        "Cannot move host node1 to Maintenance: it was changed by another request and is now "
        "Non Responsive. Nothing was done."
    )
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_run_and_maintenance_racing_cannot_both_win(admin):
    """Run holds the host's row lock from its check to its commit: Maintenance, asked
    meanwhile, waits and then sees the VM starting, and is refused."""
    host = HostFactory(name="node1")
    vm = VMFactory(host=host, status=VMStatus.DOWN)
    locked, release = threading.Event(), threading.Event()
    outcome = {}

    def run():
        try:
            with transaction.atomic():
                services.host_status_locked(host.pk)
                locked.set()
                release.wait(10)
                VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.POWERING_UP)
        finally:
            connections.close_all()

    def maintenance():
        try:
            inventory.host_maintenance(host_id=host.pk, user=admin)
            outcome["maintenance"] = "done"
        except ActionRefused as exc:
            outcome["maintenance"] = str(exc)
        finally:
            connections.close_all()

    runner = threading.Thread(target=run)
    runner.start()
    assert locked.wait(10)
    asker = threading.Thread(target=maintenance)
    asker.start()
    asker.join(0.5)
    assert asker.is_alive(), "Maintenance did not wait for the lock Run holds"
    release.set()
    runner.join(10)
    asker.join(10)
    # Maintenance saw the VM Run started: the host prepares (its VMs are migrated away).
    assert outcome["maintenance"] == "done"
    assert Host.objects.get(pk=host.pk).status == HostStatus.PREPARING_FOR_MAINTENANCE


def test_host_update_renames_and_moves_in_maintenance(admin):
    host = HostFactory(name="node1")
    HostFactory(name="node2")
    other = ClusterFactory(name="other", data_center=host.cluster.data_center)
    with pytest.raises(ActionRefused, match="Name 'NODE2' is already used by another host."):
        inventory.host_update(host_id=host.pk, user=admin, name="NODE2")
    with pytest.raises(ActionRefused, match="Host name is required"):
        inventory.host_update(host_id=host.pk, user=admin, name="bad name")
    with pytest.raises(ActionRefused) as exc:
        inventory.host_update(host_id=host.pk, user=admin, name="node1", cluster_id=other.pk)
    assert str(exc.value) == (
        "Cannot change the cluster of host node1: it is Up. Move it to Maintenance first."
    )
    inventory.host_update(host_id=host.pk, user=admin, name="node1b", cluster_id=host.cluster_id)
    assert Host.objects.get(pk=host.pk).name == "node1b"
    Host.objects.filter(pk=host.pk).update(status=HostStatus.MAINTENANCE)
    vm = VMFactory(name="web1", host=host)
    with pytest.raises(ActionRefused, match=r"virtual machines are placed on it: web1\."):
        inventory.host_update(host_id=host.pk, user=admin, name="node1b", cluster_id=other.pk)
    vm.delete()
    inventory.host_update(host_id=host.pk, user=admin, name="node1b", cluster_id=other.pk)
    assert Host.objects.get(pk=host.pk).cluster == other
    assert Event.objects.filter(action="host_edit").latest("id").message == (
        f"{admin.username} edited host node1b (moved to cluster other)."
    )


def test_host_moves_to_another_data_center_only_without_disks(admin):
    host = HostFactory(name="node1", status=HostStatus.MAINTENANCE)
    DiskFactory(
        vm=None,
        alias="floating1",
        host=host,
        storage_domain=StorageDomainFactory(data_center=host.cluster.data_center),
    )
    elsewhere = ClusterFactory()
    with pytest.raises(ActionRefused, match="of another data center: it holds disks: floating1."):
        inventory.host_update(host_id=host.pk, user=admin, name="node1", cluster_id=elsewhere.pk)
    assert Host.objects.get(pk=host.pk).cluster_id != elsewhere.pk


def test_host_remove_only_in_maintenance_and_empty(admin):
    host = HostFactory(name="node1")
    with pytest.raises(ActionRefused) as exc:
        inventory.host_remove(host_id=host.pk, user=admin)
    assert str(exc.value) == "Cannot remove host node1: it is Up. Move it to Maintenance first."
    Host.objects.filter(pk=host.pk).update(status=HostStatus.MAINTENANCE)
    vm = VMFactory(name="web1", host=host)
    DiskFactory(vm=vm, alias="web1_Disk1")
    with pytest.raises(ActionRefused) as exc:
        inventory.host_remove(host_id=host.pk, user=admin)
    assert str(exc.value) == (
        "Cannot remove host node1: it still holds virtual machines (web1); disks "
        "(web1_Disk1). Remove or move them first."
    )
    assert Host.objects.filter(pk=host.pk).exists()
    vm.disks.all().delete()
    vm.delete()
    grant(UserFactory(), "HostAdmin", host)
    assert inventory.host_remove(host_id=host.pk, user=admin) == "node1"
    assert not Host.objects.filter(pk=host.pk).exists()
    assert not UserObjectPermission.objects.filter(object_pk=str(host.pk)).exists()
    assert (
        Event.objects.get(action="host_remove").message == f"{admin.username} removed host node1."
    )
    with pytest.raises(ActionRefused, match="That host does not exist any more."):
        inventory.host_remove(host_id=host.pk, user=admin)


def test_host_add_refuses_a_name_taken_in_another_case(admin):
    HostFactory(name="node1")
    with pytest.raises(ActionRefused, match="A host with that name or URI already exists."):
        services.host_add(
            user=admin,
            name="NODE1",
            uri="qemu+ssh://root@n5/system",
            cluster_id=ClusterFactory().pk,
        )
