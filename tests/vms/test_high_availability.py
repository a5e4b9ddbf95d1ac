"""High availability (issue 12 item 1) on test-driver hosts: the HA watcher's decisions (a
stop nobody asked for is restarted, a requested one is not), priority order, back-off and
giving up, one restart per VM, surviving a monitor restart, and host loss: a Non Responsive
host's VMs stay Unknown until Confirm 'Host has been Rebooted', then the Highly Available
ones restart elsewhere in priority order. Real qemu: tests/integration/test_high_availability_qemu.py."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from factories import DiskFactory, HostFactory, StorageDomainFactory, VMFactory
from helpers import HX, assert_messages
from monitor_support import host_status, status_of

import hypervisor
from portal.kernel.config import config_set
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobKind, Phase, Severity
from storage.choices import StorageType
from vms import services, testhosts
from vms.affinity import affinity_group_create
from vms.choices import HostStatus, VMPriority, VMStatus
from vms.high_availability import (
    ha_restart_queue,
    ha_restart_step,
    host_reboot_confirm,
    stop_cause,
    vm_stop_detected,
)
from vms.models import HaRestart, Host, VirtualMachine

pytestmark = pytest.mark.django_db


def ha_vm(sync_hosts=None, *, host=None, status=VMStatus.UP, **fields) -> VirtualMachine:
    """A Highly Available VM with a disk every host reaches (NFS), started an hour ago."""
    fields.setdefault("highly_available", True)
    vm = VMFactory(
        status=status,
        started_at=timezone.now() - timedelta(hours=1) if status == VMStatus.UP else None,
        **({"host": host} if host else {}),
        **fields,
    )
    shared = StorageDomainFactory(data_center=vm.cluster.data_center, storage_type=StorageType.NFS)
    DiskFactory(vm=vm, storage_domain=shared, host=None)
    if sync_hosts is not None:
        sync_hosts(vm.host)
    return vm


def ha_events(vm) -> list[str]:
    return list(
        Event.objects.filter(vm=vm, action="ha_restart")
        .order_by("pk")
        .values_list("message", flat=True)
    )


def run_jobs(vm) -> list[Job]:
    return list(Job.objects.filter(vm=vm, kind=JobKind.VM_RUN).order_by("pk"))


# -- what counts as a stop nobody asked for ----------------------------------------------------


@pytest.mark.parametrize(
    "hints, reason, by_job, unrequested",
    [
        ({"stopped": "failed"}, "crashed", False, True),  # kill -9 of qemu
        ({"crashed": "panicked", "stopped": "crashed"}, "crashed", False, True),  # pvpanic
        ({"stopped": "destroyed"}, "destroyed", False, True),  # virsh destroy outside
        ({"shutdown": "host", "stopped": "shutdown"}, "shutdown", False, True),  # SIGTERM
        ({"shutdown": "guest", "stopped": "shutdown"}, "shutdown", False, False),  # poweroff inside
        (None, "shutdown", False, False),  # only polled: a shutdown is the guest's
        (None, "crashed", False, True),
        (None, "daemon", False, True),
        (None, "lost", False, True),
        (None, "saved", False, False),
        ({"stopped": "failed"}, "crashed", True, False),  # a Power Off from Vireo meanwhile
        ({"stopped": "destroyed"}, "destroyed", True, False),
    ],
)
def test_stop_cause(hints, reason, by_job, unrequested):
    cause = stop_cause(hints=hints, shutoff_reason=reason, asked_by_job=by_job)
    assert cause.unrequested is unrequested
    assert cause.why


def test_a_stop_after_a_portal_shutdown_is_requested(admin):
    vm = ha_vm()
    Job.objects.create(kind=JobKind.VM_SHUTDOWN, vm=vm, description="Shutdown", user=admin)
    assert (
        vm_stop_detected(vm, host=vm.host, started_at=vm.started_at, hints={"stopped": "destroyed"})
        is None
    )
    assert not HaRestart.objects.exists()
    assert ha_events(vm) == [
        f"Highly Available VM {vm.name} is Down and is not restarted: it was stopped from Vireo."
    ]
    # A shutdown job from before its last start is no request to stop this run.
    Job.objects.update(created_at=timezone.now() - timedelta(days=2))
    assert vm_stop_detected(vm, host=vm.host, started_at=vm.started_at, hints=None) is not None


# -- the watcher in the monitor, on a test host -----------------------------------------------


def test_a_ha_vm_stopped_outside_is_restarted_with_events(monitor, sync_hosts, work):
    vm = ha_vm(sync_hosts)
    monitor.cycle()
    assert status_of(vm) == VMStatus.UP
    hypervisor.connect(vm.host.uri).destroy(str(vm.uuid))  # not through Vireo
    work(monitor.cycle)  # seen Down, queued, restarted: the Run job runs
    assert status_of(vm) == VMStatus.UP
    assert HaRestart.objects.filter(vm=vm).exists()  # until the watcher sees the Run end
    monitor.cycle()
    assert not HaRestart.objects.filter(vm=vm).exists()
    host = vm.host.name
    assert ha_events(vm) == [
        f"Highly Available {vm.name} failed (it was destroyed outside Vireo). It will be "
        "restarted automatically.",
        f"{vm.name} was restarted on Host {host}.",
    ]
    (job,) = run_jobs(vm)
    assert job.user is None and job.params["ha_restart"] is True
    messages = list(Event.objects.filter(vm=vm).order_by("pk").values_list("message", flat=True))
    assert f"Restarting Highly Available VM {vm.name} on host {host}." in messages
    assert f"VM {vm.name} was started on host {host}." in messages
    assert hypervisor.connect(vm.host.uri).get_domain(str(vm.uuid)).state == "running"


def test_a_vm_that_is_not_highly_available_stays_down(monitor, sync_hosts, work):
    vm = ha_vm(sync_hosts, highly_available=False)
    monitor.cycle()
    hypervisor.connect(vm.host.uri).destroy(str(vm.uuid))
    work(monitor.cycle)
    assert status_of(vm) == VMStatus.DOWN
    assert not HaRestart.objects.exists() and run_jobs(vm) == [] and ha_events(vm) == []


def test_a_guest_that_shuts_itself_down_is_not_restarted(monitor, sync_hosts, work):
    vm = ha_vm(sync_hosts)
    monitor.cycle()
    hypervisor.connect(vm.host.uri).shutdown(str(vm.uuid))  # the guest's own poweroff
    work(monitor.cycle)
    assert status_of(vm) == VMStatus.DOWN
    assert run_jobs(vm) == []
    assert ha_events(vm) == [
        f"Highly Available VM {vm.name} is Down and is not restarted: the guest operating "
        "system shut itself down."
    ]


def test_a_ha_vm_powered_off_from_vireo_stays_down(monitor, sync_hosts, work, admin):
    vm = ha_vm(sync_hosts)
    monitor.cycle()
    work(lambda: services.vm_poweroff(vm_id=vm.pk, user=admin))
    assert status_of(vm) == VMStatus.DOWN
    work(monitor.cycle)
    assert status_of(vm) == VMStatus.DOWN
    assert run_jobs(vm) == [] and not HaRestart.objects.exists()


def test_waiting_restarts_start_by_priority_and_survive_a_monitor_restart(
    monitor, sync_hosts, work
):
    host = HostFactory()
    low = ha_vm(host=host, status=VMStatus.DOWN, priority=VMPriority.LOW, name="a-low")
    high = ha_vm(host=host, status=VMStatus.DOWN, priority=VMPriority.HIGH, name="b-high")
    medium = ha_vm(host=host, status=VMStatus.DOWN, priority=VMPriority.MEDIUM, name="c-medium")
    sync_hosts(host)
    for vm in (low, medium, high):  # queued by a monitor that then stopped
        ha_restart_queue(vm, host=host, why="its QEMU process failed or was killed")
    work(monitor.ha_pass)  # a new monitor: it reads them from the database
    order = (
        Job.objects.filter(kind=JobKind.VM_RUN).order_by("pk").values_list("vm__name", flat=True)
    )
    assert list(order) == ["b-high", "c-medium", "a-low"]
    assert [status_of(v) for v in (high, medium, low)] == [VMStatus.UP] * 3


def test_one_restart_per_vm(monitor, sync_hosts, work):
    vm = ha_vm(sync_hosts, status=VMStatus.DOWN)
    first = ha_restart_queue(vm, host=vm.host, why="it crashed")
    again = ha_restart_queue(vm, host=vm.host, why="it crashed")
    assert first.pk == again.pk and HaRestart.objects.count() == 1
    with pytest.raises(Exception):  # noqa: B017 - the database refuses a second row
        HaRestart.objects.create(vm=vm, reason="twice")


def test_a_second_pass_does_not_start_the_vm_again(sync_hosts, django_capture_on_commit_callbacks):
    vm = ha_vm(sync_hosts, status=VMStatus.DOWN)
    restart = ha_restart_queue(vm, host=vm.host, why="it crashed")
    with django_capture_on_commit_callbacks(execute=False):
        assert ha_restart_step(restart.pk) == 1
        assert ha_restart_step(restart.pk) == 0  # its Run is under way
    assert len(run_jobs(vm)) == 1
    assert status_of(vm) == VMStatus.POWERING_UP


def test_no_host_backs_off_then_gives_up(sync_hosts, admin, django_capture_on_commit_callbacks):
    vm = ha_vm(sync_hosts, status=VMStatus.DOWN)
    Host.objects.filter(pk=vm.host_id).update(status=HostStatus.MAINTENANCE)
    config_set("MaxNumOfTriesToRunFailedAutoStartVm", 2, user=admin)
    config_set("RetryToRunAutoStartVmIntervalInSeconds", 40, user=admin)
    restart = ha_restart_queue(vm, host=vm.host, why="it crashed")
    assert ha_restart_step(restart.pk) == 0
    restart.refresh_from_db()
    assert restart.attempts == 1
    wait = (restart.next_attempt_at - timezone.now()).total_seconds()
    assert 30 < wait <= 40
    failed = Event.objects.filter(vm=vm, action="ha_restart", phase=Phase.FAILED).get()
    assert failed.severity == Severity.WARNING
    assert failed.message.startswith(
        f"Failed to start Highly Available VM {vm.name} (try 1 of 2). Attempting to restart in"
    )
    assert f"{vm.host.name}: the host is Maintenance" in failed.message
    assert ha_restart_step(restart.pk) == 0  # not yet: backing off
    assert HaRestart.objects.get(pk=restart.pk).attempts == 1
    HaRestart.objects.filter(pk=restart.pk).update(next_attempt_at=timezone.now())
    assert ha_restart_step(restart.pk) == 0
    assert not HaRestart.objects.exists()
    gave_up = Event.objects.filter(vm=vm, action="ha_restart").latest("pk")
    assert gave_up.severity == Severity.ERROR
    assert gave_up.message.startswith(
        f"Failed to restart Highly Available VM {vm.name} after 2 tries; it stays Down."
    )
    assert status_of(vm) == VMStatus.DOWN and run_jobs(vm) == []


def test_a_failed_run_is_tried_again_later(sync_hosts, work, monkeypatch):
    vm = ha_vm(sync_hosts, status=VMStatus.DOWN)
    restart = ha_restart_queue(vm, host=vm.host, why="it crashed")

    def refuse(self, uuid):
        raise hypervisor.HypervisorError("qemu said no")

    monkeypatch.setattr(hypervisor.TestDriverConnection, "start", refuse)
    work(lambda: ha_restart_step(restart.pk))
    assert status_of(vm) == VMStatus.DOWN
    ha_restart_step(restart.pk)  # sees the Run failed
    restart.refresh_from_db()
    assert (restart.attempts, restart.job) == (1, None)
    assert "qemu said no" in restart.last_error
    assert restart.next_attempt_at > timezone.now()


def test_a_vm_run_by_hand_meanwhile_is_not_restarted(sync_hosts, work, admin):
    vm = ha_vm(sync_hosts, status=VMStatus.DOWN)
    restart = ha_restart_queue(vm, host=vm.host, why="it crashed")
    HaRestart.objects.filter(pk=restart.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    ha_restart_step(restart.pk)
    assert not HaRestart.objects.exists()
    assert ha_events(vm)[-1] == f"{vm.name} is running again: no restart needed."
    assert len(run_jobs(vm)) == 1


# -- host loss ----------------------------------------------------------------------------------


@pytest.fixture
def lost_host(tmp_path, sync_hosts, monitor):
    """Host `lost` (a node file the test takes away) running HA VMs of three priorities and a
    VM that is not HA, and host `spare` in the same cluster; both Up in the monitor."""
    path = tmp_path / "outside" / "node"
    path.parent.mkdir()
    lost = HostFactory(name="lost", uri=f"test://{path}")
    spare = HostFactory(name="spare", cluster=lost.cluster)
    vms = {
        name: ha_vm(host=lost, name=name, priority=priority, highly_available=ha)
        for name, priority, ha in (
            ("a-low", VMPriority.LOW, True),
            ("b-high", VMPriority.HIGH, True),
            ("c-medium", VMPriority.MEDIUM, True),
            ("d-plain", VMPriority.HIGH, False),
        )
    }
    path.write_text(testhosts.node_xml(lost))
    sync_hosts(spare)
    monitor.cycle()
    assert host_status(lost) == HostStatus.UP
    return lost, spare, vms, path


def test_a_lost_hosts_vms_stay_unknown_until_confirm_then_restart_by_priority(
    lost_host, monitor, work, admin
):
    lost, spare, vms, path = lost_host
    path.rename(path.parent / "gone")
    hypervisor.disconnect(lost.uri)
    for _ in range(2):
        work(monitor.cycle)
    assert host_status(lost) == HostStatus.NON_RESPONSIVE
    assert {status_of(v) for v in vms.values()} == {VMStatus.UNKNOWN}
    assert not HaRestart.objects.exists() and not Job.objects.filter(kind=JobKind.VM_RUN)

    moved = work(lambda: host_reboot_confirm(host_id=lost.pk, user=admin))
    assert [v.name for v in moved] == ["b-high", "d-plain", "c-medium", "a-low"]
    assert {status_of(v) for v in vms.values()} == {VMStatus.DOWN}
    assert HaRestart.objects.count() == 3
    work(monitor.ha_pass)  # the monitor's next HA pass (at most a poll away)
    order = (
        Job.objects.filter(kind=JobKind.VM_RUN).order_by("pk").values_list("vm__name", flat=True)
    )
    assert list(order) == ["b-high", "c-medium", "a-low"]
    for name in ("a-low", "b-high", "c-medium"):
        vm = VirtualMachine.objects.get(name=name)
        assert (vm.status, vm.host) == (VMStatus.UP, spare), name
    plain = VirtualMachine.objects.get(name="d-plain")
    assert (plain.status, plain.host) == (VMStatus.DOWN, lost)
    confirmed = Event.objects.get(action="host_confirm_rebooted")
    assert confirmed.message.startswith(f"{admin.username} confirmed that host lost has been")
    assert Host.objects.get(pk=lost.pk).fenced_at is not None
    monitor.cycle()
    assert not HaRestart.objects.exists()
    assert Event.objects.filter(message="b-high was restarted on Host spare.").exists()


def test_confirm_is_refused_for_a_host_that_is_up_or_answers(lost_host, admin):
    lost, spare, vms, path = lost_host
    with pytest.raises(ActionRefused) as exc:
        host_reboot_confirm(host_id=lost.pk, user=admin)
    assert str(exc.value) == (
        "Cannot confirm that host lost has been rebooted: it is Up and answers. Nothing was done."
    )
    # Non Responsive in the inventory, yet it answers when asked now.
    Host.objects.filter(pk=lost.pk).update(status=HostStatus.NON_RESPONSIVE)
    with pytest.raises(ActionRefused, match="it answers at .* so it is not down"):
        host_reboot_confirm(host_id=lost.pk, user=admin)
    Host.objects.filter(pk=lost.pk).update(status=HostStatus.MAINTENANCE)
    with pytest.raises(ActionRefused, match="it is Maintenance; only a Non Responsive host"):
        host_reboot_confirm(host_id=lost.pk, user=admin)
    assert {status_of(v) for v in vms.values()} == {VMStatus.UP}
    assert not HaRestart.objects.exists()
    assert not Event.objects.filter(action="host_confirm_rebooted").exists()


def test_confirm_window(lost_host, admin_client, monitor):
    lost, spare, vms, path = lost_host
    url = reverse("vms:host_confirm_rebooted", args=[lost.pk])
    page = admin_client.get(url, headers=HX)
    assert "Confirm &#x27;Host has been Rebooted&#x27;" in page.content.decode()
    assert_messages(
        admin_client.post(url, headers=HX),
        "error",
        "Cannot confirm that host lost has been rebooted: it is Up and answers. Nothing was done.",
    )
    path.rename(path.parent / "gone")
    hypervisor.disconnect(lost.uri)
    monitor.cycle()
    assert_messages(
        admin_client.post(url, headers=HX),
        "success",
        "Host lost was confirmed rebooted: 4 VMs marked Down; the Highly Available ones are "
        "being restarted elsewhere.",
    )
    assert HaRestart.objects.count() == 3


def test_edit_vm_high_availability_tab_and_general_sub_tab(admin_client):
    vm = ha_vm(status=VMStatus.DOWN, highly_available=False)
    url = reverse("vms:edit", args=[vm.pk])
    window = admin_client.get(url, headers=HX).content.decode()
    assert 'name="highly_available"' in window and "Priority for Run/Migration queue" in window
    form = {
        "description": "",
        "console_disconnect_action": vm.console_disconnect_action,
        "memory_mb": vm.memory_mb,
        "vcpus": vm.vcpus,
    }
    ticked = {**form, "priority": VMPriority.MEDIUM, "highly_available": "on"}
    assert_messages(admin_client.post(url, ticked, headers=HX), "success", f"VM {vm.name} saved.")
    vm.refresh_from_db()
    assert (vm.highly_available, vm.priority) == (True, VMPriority.MEDIUM)
    admin_client.post(url, form, headers=HX)  # a client that knows no such tab: unchanged
    assert VirtualMachine.objects.get(pk=vm.pk).highly_available is True
    general = admin_client.get(reverse("vms:details", args=[vm.pk, "general"]), headers=HX)
    text = general.content.decode()
    assert '<dd class="highly-available">Yes</dd>' in text
    assert '<dd class="priority">Medium</dd>' in text
    ha_restart_queue(vm, host=vm.host, why="it crashed")
    assert (
        "Waiting to be restarted"
        in admin_client.get(
            reverse("vms:details", args=[vm.pk, "general"]), headers=HX
        ).content.decode()
    )
    unticked = {**form, "priority": VMPriority.MEDIUM}  # the tab posted, the box not ticked
    admin_client.post(url, unticked, headers=HX)
    assert VirtualMachine.objects.get(pk=vm.pk).highly_available is False


def test_an_ha_restart_honours_an_enforcing_affinity_group(
    lost_host, monitor, work, admin, sync_hosts
):
    """The HA restart goes through the scheduler's affinity filters: b-high, in a Positive
    Enforcing group with a VM running on `spare`, restarts there although the empty host
    `other` is less loaded (where it goes without the group)."""
    lost, spare, vms, path = lost_host
    other = HostFactory(name="other", cluster=lost.cluster, memory_mb=65536, cpus=16)
    guard = ha_vm(host=spare, name="guard", highly_available=False)
    sync_hosts(spare, other)
    monitor.cycle()
    affinity_group_create(
        user=admin,
        cluster_id=lost.cluster_id,
        name="with-guard",
        vm_rule="positive",
        vm_enforcing=True,
        vm_ids=[vms["b-high"].pk, guard.pk],
    )
    path.rename(path.parent / "gone")
    hypervisor.disconnect(lost.uri)
    for _ in range(2):
        work(monitor.cycle)
    work(lambda: host_reboot_confirm(host_id=lost.pk, user=admin))
    work(monitor.ha_pass)
    b_high = VirtualMachine.objects.select_related("host").get(name="b-high")
    assert (b_high.status, b_high.host.name) == (VMStatus.UP, "spare")
