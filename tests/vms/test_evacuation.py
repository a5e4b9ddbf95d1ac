"""A host moved to Maintenance with VMs running (vms/evacuation.py, driven by the monitor's
cycle) on test-driver hosts, whose connection stands in for libvirt's migration: the host is
Preparing For Maintenance, its VMs leave by priority with at most the cluster's limit at once,
and it reaches Maintenance when empty; a VM that cannot leave keeps it Preparing with the
reason shown and one Event; Activate cancels the move."""

import pytest
from django.urls import reverse
from factories import ClusterFactory, HostFactory
from helpers import HX, assert_messages, html_find, html_one, html_text

from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Phase
from vms import inventory, services
from vms.choices import HostStatus, MigrationMode, VMPriority, VMStatus
from vms.evacuation import concurrent_limit
from vms.models import Cluster, Host, VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(sync_hosts):
    cluster = ClusterFactory(max_concurrent_migrations=2)
    made = [HostFactory(cluster=cluster, name=f"h{n}", memory_mb=8192, cpus=4) for n in (1, 2)]
    sync_hosts(*made)
    return made


@pytest.fixture
def step(monitor, django_capture_on_commit_callbacks):
    """One monitor cycle, its migrations enqueued (not yet run): the VMs Migrating From."""

    def run() -> list[str]:
        with django_capture_on_commit_callbacks(execute=True):
            monitor.cycle()
        return sorted(
            VirtualMachine.objects.filter(status=VMStatus.MIGRATING_FROM).values_list(
                "name", flat=True
            )
        )

    return run


def on_host(host) -> list[str]:
    return sorted(VirtualMachine.objects.filter(host=host).values_list("name", flat=True))


def host_of(host) -> Host:
    return Host.objects.get(pk=host.pk)


def test_vms_leave_by_priority_two_at_a_time_then_the_host_is_in_maintenance(
    hosts, make_vm, admin, step, work_off
):
    h1, h2 = hosts
    for name, priority in [
        ("a-low", "LOW"),
        ("b-low", "LOW"),
        ("c-med", "MEDIUM"),
        ("d-high", "HIGH"),
    ]:
        make_vm(
            status=VMStatus.UP,
            disks=0,
            host=h1,
            name=name,
            memory_mb=512,
            priority=VMPriority[priority],
        )
    make_vm(status=VMStatus.DOWN, disks=0, host=h1, name="e-down")
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    assert host_of(h1).status == HostStatus.PREPARING_FOR_MAINTENANCE
    assert Event.objects.get(action="host_maintenance").message == (
        f"{admin.username} moved host h1 to Maintenance: it is Preparing For Maintenance, "
        "migrating 4 VMs away."
    )
    assert step() == ["c-med", "d-high"]  # High, then Medium; two at a time
    assert step() == ["c-med", "d-high"]  # none more while those two run
    work_off()
    assert on_host(h2) == ["c-med", "d-high"]
    assert step() == ["a-low", "b-low"]
    requested = Event.objects.filter(action="migrate", phase=Phase.REQUESTED, vm__name="a-low")
    assert requested.get().message == (
        "The system asked to migrate VM a-low from host h1 to h2 (selected automatically)."
    )
    work_off()
    assert host_of(h1).status == HostStatus.PREPARING_FOR_MAINTENANCE
    assert step() == []
    assert host_of(h1).status == HostStatus.MAINTENANCE
    assert on_host(h1) == ["e-down"]  # Down VMs stay
    assert set(VirtualMachine.objects.filter(host=h2).values_list("status", flat=True)) == {
        VMStatus.UP
    }
    assert Event.objects.filter(action="host_maintenance").order_by("pk").last().message == (
        "Host h1 is in Maintenance: no VM runs on it any more."
    )


def test_the_limit_is_engine_configs_when_the_cluster_sets_none(hosts):
    h1, _h2 = hosts
    assert concurrent_limit(h1) == 2
    h1.cluster.max_concurrent_migrations = None
    assert concurrent_limit(h1) == 2  # MaxNumberOfConcurrentMigrations' default
    h1.cluster.max_concurrent_migrations = 5
    assert concurrent_limit(h1) == 5


def test_vms_that_cannot_leave_keep_it_preparing_with_the_reason_and_one_event(
    hosts, make_vm, admin, admin_client, step, work_off, work
):
    h1, h2 = hosts
    make_vm(
        status=VMStatus.UP, disks=0, host=h1, name="pinned", migration_mode=MigrationMode.PINNED
    )
    make_vm(
        status=VMStatus.UP,
        disks=0,
        host=h1,
        name="manual",
        migration_mode=MigrationMode.USER_MIGRATABLE,
    )
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="web1", memory_mb=512)
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    assert step() == ["web1"]
    reason = (
        "manual cannot leave: the VM allows manual migration only\n"
        "pinned cannot leave: the VM does not allow migration"
    )
    assert host_of(h1).maintenance_reason == reason
    warning = Event.objects.get(action="host_maintenance", phase=Phase.DETECTED)
    assert warning.message == (
        "Host h1 stays Preparing For Maintenance: manual cannot leave (the VM allows manual "
        "migration only); pinned cannot leave (the VM does not allow migration)."
    )
    work_off()
    assert step() == []
    assert (host_of(h1).status, host_of(h1).maintenance_reason) == (
        HostStatus.PREPARING_FOR_MAINTENANCE,
        reason,
    )
    assert Event.objects.filter(action="host_maintenance", phase=Phase.DETECTED).count() == 1
    assert on_host(h2) == ["web1"]
    row = html_one(admin_client.get(reverse("vms:hosts")), f"#host-{h1.pk}")
    assert "Preparing For Maintenance" in html_text(row)
    assert "pinned cannot leave: the VM does not allow migration" in html_text(row)

    # The manual-only VM is powered off (allowed on a host Preparing For Maintenance): the
    # other is still listed, no new Event.
    manual = VirtualMachine.objects.get(name="manual")
    work(lambda: services.vm_poweroff(vm_id=manual.pk, user=admin))
    assert VirtualMachine.objects.get(name="manual").status == VMStatus.DOWN
    step()
    assert host_of(h1).maintenance_reason == "pinned cannot leave: the VM does not allow migration"
    assert Event.objects.filter(action="host_maintenance", phase=Phase.DETECTED).count() == 1

    # Activate cancels: the reason goes, the monitor brings the host Up.
    inventory.host_activate(host_id=h1.pk, user=admin)
    assert (host_of(h1).status, host_of(h1).maintenance_reason) == (HostStatus.CONNECTING, "")
    assert step() == []
    assert host_of(h1).status == HostStatus.UP
    assert on_host(h1) == ["manual", "pinned"]


def test_run_places_a_vm_elsewhere_than_a_host_preparing_for_maintenance(
    hosts, make_vm, admin, work
):
    h1, h2 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="web1")
    down = make_vm(status=VMStatus.DOWN, disks=0, host=h1, name="db1")
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    work(lambda: services.vm_run(vm_id=down.pk, user=admin))
    down.refresh_from_db()
    assert (down.status, down.host) == (VMStatus.UP, h2)
    Host.objects.filter(pk=h2.pk).update(status=HostStatus.NON_RESPONSIVE)
    down = make_vm(status=VMStatus.DOWN, disks=0, host=h1, name="db2")
    with pytest.raises(ActionRefused, match="its host h1 is Preparing For Maintenance. No other"):
        services.vm_run(vm_id=down.pk, user=admin)
    assert VirtualMachine.objects.get(pk=down.pk).status == VMStatus.DOWN


def test_edit_vm_sets_the_priority_on_its_high_availability_tab(admin_client, make_vm):
    vm = make_vm(VMStatus.UP, disks=0)
    url = reverse("vms:edit", args=[vm.pk])
    window = admin_client.get(url, headers=HX)
    panel = html_find(window, "fieldset.side-tab-panel")[3]
    assert [html_text(o) for o in panel.cssselect("select[name=priority] option")] == [
        "Low",
        "Medium",
        "High",
    ]
    form = {"description": "", "console_disconnect_action": vm.console_disconnect_action}
    response = admin_client.post(url, {**form, "priority": VMPriority.HIGH}, headers=HX)
    assert_messages(response, "success", f"VM {vm.name} saved.")
    assert VirtualMachine.objects.get(pk=vm.pk).priority == VMPriority.HIGH
    response = admin_client.post(url, {**form, "priority": 7}, headers=HX)
    assert "Select a valid choice" in response.content.decode()
    admin_client.post(url, form, headers=HX)  # a client that knows no such tab: unchanged
    assert VirtualMachine.objects.get(pk=vm.pk).priority == VMPriority.HIGH
    with pytest.raises(ActionRefused, match="Choose a Priority for Run/Migration queue"):
        services.vm_edit(vm_id=vm.pk, user=None, description="", sso_enabled=True, priority=7)


def test_edit_cluster_sets_the_maximum_concurrent_outgoing_migrations(admin_client):
    cluster = ClusterFactory(name="prod")
    url = reverse("vms:cluster_edit", args=[cluster.pk])
    form = {"name": "prod", "shutdown_timeout": 120}
    response = admin_client.post(url, {**form, "max_concurrent_migrations": 4}, headers=HX)
    assert_messages(response, "success", "Cluster prod saved.")
    assert Cluster.objects.get(pk=cluster.pk).max_concurrent_migrations == 4
    response = admin_client.post(url, {**form, "max_concurrent_migrations": 33}, headers=HX)
    assert "Maximum concurrent outgoing migrations must be between 1 and 32." in (
        response.content.decode()
    )
    assert Cluster.objects.get(pk=cluster.pk).max_concurrent_migrations == 4
    admin_client.post(url, {**form, "max_concurrent_migrations": ""}, headers=HX)
    assert Cluster.objects.get(pk=cluster.pk).max_concurrent_migrations is None  # engine-config's


def test_new_cluster_takes_the_maximum_concurrent_outgoing_migrations(admin):
    dc = ClusterFactory().data_center
    cluster = inventory.cluster_create(
        user=admin, name="fast", data_center_id=dc.pk, max_concurrent_migrations=3
    )
    assert Cluster.objects.get(pk=cluster.pk).max_concurrent_migrations == 3
    with pytest.raises(ActionRefused, match="must be between 1 and 32"):
        inventory.cluster_create(
            user=admin, name="slow", data_center_id=dc.pk, max_concurrent_migrations=0
        )
    assert not Cluster.objects.filter(name="slow").exists()


def test_a_failed_migration_is_not_tried_again_until_maintenance_is_asked_again(
    hosts, make_vm, admin, step, work_off
):
    h1, h2 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="web1")
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    assert step() == ["web1"]
    Host.objects.filter(pk=h2.pk).update(uri=h2.uri + ".gone.xml")  # the destination drops
    work_off()
    Host.objects.filter(pk=h2.pk).update(uri=h2.uri)
    assert step() == []
    reason = host_of(h1).maintenance_reason
    assert reason.startswith("web1 cannot leave: its migration failed (")
    warning = Event.objects.get(action="host_maintenance", phase=Phase.DETECTED)
    assert warning.message.startswith(
        "Host h1 stays Preparing For Maintenance: web1 cannot leave (its migration failed ("
    )
    assert on_host(h1) == ["web1"]
    # Activate, then Maintenance again: it is tried again, and leaves.
    inventory.host_activate(host_id=h1.pk, user=admin)
    step()
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    assert step() == ["web1"]
    work_off()
    step()
    assert (host_of(h1).status, on_host(h2)) == (HostStatus.MAINTENANCE, ["web1"])


def test_a_host_preparing_for_maintenance_that_drops_stays_so_with_the_error(
    hosts, make_vm, admin, step
):
    h1, _h2 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="web1")
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    Host.objects.filter(pk=h1.pk).update(uri=h1.uri + ".gone.xml")
    step()
    host = host_of(h1)
    assert host.status == HostStatus.PREPARING_FOR_MAINTENANCE and host.last_error


def test_a_paused_vm_leaves_paused(hosts, make_vm, admin, step, work_off):
    h1, h2 = hosts
    make_vm(status=VMStatus.PAUSED, disks=0, host=h1, name="paused1", memory_mb=512)
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    assert host_of(h1).status == HostStatus.PREPARING_FOR_MAINTENANCE
    assert step() == ["paused1"]
    work_off()
    vm = VirtualMachine.objects.get(name="paused1")
    assert (vm.status, vm.host) == (VMStatus.PAUSED, h2)
    step()
    assert host_of(h1).status == HostStatus.MAINTENANCE


def test_a_vm_busy_with_another_job_waits_with_its_status_as_the_reason(
    hosts, make_vm, admin, step, django_capture_on_commit_callbacks
):
    h1, _h2 = hosts
    vm = make_vm(status=VMStatus.UP, disks=0, host=h1, name="rebooting")
    with django_capture_on_commit_callbacks(execute=True):
        services.vm_reboot(vm_id=vm.pk, user=admin)  # queued, not run
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    assert step() == []
    assert host_of(h1).maintenance_reason == "rebooting cannot leave: it is Reboot In Progress"


def test_a_migration_that_ends_starts_the_next_one_at_once(
    hosts, make_vm, admin, step, work_off, django_capture_on_commit_callbacks
):
    """No waiting for the monitor's next cycle: the end of a migration out of a host Preparing
    For Maintenance starts the next one (within the limit), and the last one's end moves the
    host to Maintenance."""
    h1, h2 = hosts
    Cluster.objects.filter(pk=h1.cluster_id).update(max_concurrent_migrations=1)
    for name, priority in [("a", "LOW"), ("b", "MEDIUM"), ("c", "HIGH")]:
        make_vm(status=VMStatus.UP, disks=0, host=h1, name=name, priority=VMPriority[priority])
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    assert step() == ["c"]

    def migrating() -> list[str]:
        with django_capture_on_commit_callbacks(execute=True):
            work_off()  # the running migration ends; its end's callbacks start the next one
        return sorted(
            VirtualMachine.objects.filter(status=VMStatus.MIGRATING_FROM).values_list(
                "name", flat=True
            )
        )

    assert migrating() == ["b"]
    assert migrating() == ["a"]
    assert migrating() == []
    assert on_host(h2) == ["a", "b", "c"]
    assert host_of(h1).status == HostStatus.MAINTENANCE
