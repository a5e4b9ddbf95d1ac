"""Load balancing (issue 12 item 3): the Scheduling Policy's thresholds (vms.scheduling's
over- and under-utilization, the balance_headroom filter, the weights per policy) and the
monitor's balancer (vms/balancing.py) on test-driver hosts, whose connection stands in for
libvirt's migration: one migration per cluster and cycle, only after
CpuOverCommitDurationMinutes, never while a migration runs, VMs that cannot move named once,
and an Event saying why for every move."""

from datetime import timedelta

import pytest
from django.utils import timezone
from factories import ClusterFactory, HostFactory, VMFactory

from portal.kernel.models import Event, Phase, Severity
from vms import balancing
from vms.affinity import NEGATIVE, affinity_group_create
from vms.balancing import CORRECTIONS, Balancer, Blocked, power_saving
from vms.choices import HostStatus, MigrationMode, SchedulingPolicy, VMStatus
from vms.models import Host, VirtualMachine
from vms.scheduling import (
    Candidate,
    NoHostAvailable,
    Purpose,
    cluster_candidates,
    overutilization,
    schedule,
    underutilization,
)

pytestmark = pytest.mark.django_db

EVENLY = SchedulingPolicy.EVENLY_DISTRIBUTED
POWER = SchedulingPolicy.POWER_SAVING
LONG_AGO = timedelta(minutes=3)  # past CpuOverCommitDurationMinutes' default of 2


def loads(cluster) -> dict[str, Candidate]:
    return {c.host.name: c for c in cluster_candidates(cluster.pk)}


def set_cpu(host, percent, *, over_for=None, under_for=None) -> None:
    fields = {"cpu_usage_percent": percent, "cpu_usage_at": timezone.now()}
    if over_for is not None:
        fields["over_utilized_since"] = timezone.now() - over_for
    if under_for is not None:
        fields["under_utilized_since"] = timezone.now() - under_for
    Host.objects.filter(pk=host.pk).update(**fields)


@pytest.fixture
def cluster():
    return ClusterFactory(name="prod", scheduling_policy=EVENLY)


@pytest.fixture
def hosts(cluster, sync_hosts):
    made = [HostFactory(cluster=cluster, name=f"h{n}", memory_mb=8192, cpus=4) for n in (1, 2, 3)]
    sync_hosts(*made)
    return made


@pytest.fixture
def balance(django_capture_on_commit_callbacks):
    """One balancer cycle, its migration enqueued (not yet run): the VMs Migrating From."""
    balancer = Balancer()

    def run() -> list[str]:
        with django_capture_on_commit_callbacks(execute=True):
            balancer.run()
        return sorted(
            VirtualMachine.objects.filter(status=VMStatus.MIGRATING_FROM).values_list(
                "name", flat=True
            )
        )

    run.balancer = balancer
    return run


def on_host(host) -> list[str]:
    return sorted(VirtualMachine.objects.filter(host=host).values_list("name", flat=True))


def balance_events():
    return Event.objects.filter(action="balance").order_by("pk")


# -- thresholds ------------------------------------------------------------------------------


def test_over_and_under_utilization_by_cpu_and_free_memory(cluster):
    cluster.max_free_memory_for_over_utilized = 1024
    cluster.min_free_memory_for_under_utilized = 4096
    cluster.save()
    host = HostFactory(cluster=cluster, name="h1", memory_mb=8192, cpu_usage_percent=79)
    VMFactory(host=host, status=VMStatus.UP, memory_mb=2048)
    c = loads(cluster)["h1"]
    assert overutilization(c) == ""
    assert underutilization(c) == ""  # evenly_distributed has no under-utilization
    Host.objects.filter(pk=host.pk).update(cpu_usage_percent=80)
    assert overutilization(loads(cluster)["h1"]) == (
        "its CPU is at 80 %, at or over HighUtilization (80 %)"
    )
    VMFactory(host=host, status=VMStatus.UP, memory_mb=5632)  # 512 MB left
    assert overutilization(loads(cluster)["h1"]) == (
        "its CPU is at 80 %, at or over HighUtilization (80 %) and it has 512 MB free memory, "
        "under MaxFreeMemoryForOverUtilized (1024 MB)"
    )
    cluster.scheduling_policy = SchedulingPolicy.NONE
    cluster.save()
    assert overutilization(loads(cluster)["h1"]) == ""  # no policy, no thresholds


def test_under_utilization_is_power_savings_with_both_thresholds(cluster):
    cluster.scheduling_policy = POWER
    cluster.save()
    host = HostFactory(cluster=cluster, name="h1", memory_mb=8192, cpu_usage_percent=None)
    assert underutilization(loads(cluster)["h1"]) == ""  # not measured yet: not acted on
    Host.objects.filter(pk=host.pk).update(cpu_usage_percent=19)
    assert underutilization(loads(cluster)["h1"]) == (
        "its CPU is at 19 %, under LowUtilization (20 %)"
    )
    cluster.min_free_memory_for_under_utilized = 8192
    cluster.save()
    assert underutilization(loads(cluster)["h1"]) == ""  # 8192 MB free is not over 8192
    cluster.min_free_memory_for_under_utilized = 4096
    cluster.save()
    assert underutilization(loads(cluster)["h1"]) == (
        "its CPU is at 19 %, under LowUtilization (20 %) and it has 8192 MB free memory, over "
        "MinFreeMemoryForUnderUtilized (4096 MB)"
    )


def test_balance_headroom_filter_applies_to_the_balancers_moves_only(cluster):
    cluster.max_free_memory_for_over_utilized = 2048
    cluster.save()
    source = HostFactory(cluster=cluster, name="src", memory_mb=8192, cpu_usage_percent=95)
    busy = HostFactory(cluster=cluster, name="busy", memory_mb=8192, cpu_usage_percent=85)
    full = HostFactory(cluster=cluster, name="full", memory_mb=8192, cpu_usage_percent=10)
    new = HostFactory(cluster=cluster, name="new", memory_mb=8192, cpu_usage_percent=None)
    VMFactory(host=full, status=VMStatus.UP, memory_mb=5120)
    vm = VMFactory(host=source, status=VMStatus.UP, memory_mb=2048)
    with pytest.raises(NoHostAvailable) as refused:
        schedule(vm, purpose=Purpose.MIGRATE, exclude=[source.pk], automatic=True, balancing=True)
    assert refused.value.reasons == {
        "busy": "its CPU is at 85 %, at or over HighUtilization (80 %)",
        "full": "it would have 1024 MB free memory, under MaxFreeMemoryForOverUtilized (2048 MB)",
        "new": "its CPU usage is not known yet (the monitor measures it between two polls)",
    }
    # Maintenance's and the administrator's migrations are not the balancer's: no headroom.
    assert schedule(vm, purpose=Purpose.MIGRATE, exclude=[source.pk], automatic=True) in (
        busy,
        full,
        new,
    )
    Host.objects.filter(pk=new.pk).update(cpu_usage_percent=30)
    assert (
        schedule(vm, purpose=Purpose.MIGRATE, exclude=[source.pk], automatic=True, balancing=True)
        == new
    )


def test_evenly_headroom_wants_more_free_memory_than_min_free_for_under_utilized(cluster):
    cluster.min_free_memory_for_under_utilized = 6144
    cluster.save()
    source = HostFactory(cluster=cluster, name="src", memory_mb=8192, cpu_usage_percent=95)
    half = HostFactory(cluster=cluster, name="half", memory_mb=8192, cpu_usage_percent=10)
    VMFactory(host=half, status=VMStatus.UP, memory_mb=4096)
    vm = VMFactory(host=source, status=VMStatus.UP, memory_mb=512)
    with pytest.raises(NoHostAvailable) as refused:
        schedule(vm, purpose=Purpose.MIGRATE, exclude=[source.pk], automatic=True, balancing=True)
    assert refused.value.reasons == {
        "half": "it has 4096 MB free memory, not over MinFreeMemoryForUnderUtilized (6144 MB)"
    }


# -- weights per policy ------------------------------------------------------------------------


def test_evenly_distributed_places_on_the_least_loaded_host_by_cpu_and_memory(cluster):
    h1 = HostFactory(cluster=cluster, name="h1", cpu_usage_percent=70)
    h2 = HostFactory(cluster=cluster, name="h2", cpu_usage_percent=10)
    VMFactory(host=h2, status=VMStatus.UP, memory_mb=1024)  # a little more memory on h2
    vm = VMFactory(host=None, cluster=cluster)
    assert schedule(vm, purpose=Purpose.RUN) == h2  # CPU tells them apart
    cluster.scheduling_policy = SchedulingPolicy.NONE
    cluster.save()
    vm.cluster.refresh_from_db()
    assert schedule(vm, purpose=Purpose.RUN) == h1  # none: memory only, as before
    assert h1 != h2


def test_power_saving_packs_onto_the_busiest_host_that_stays_under_high_utilization(cluster):
    cluster.scheduling_policy = POWER
    cluster.max_free_memory_for_over_utilized = 1024
    cluster.save()
    empty = HostFactory(cluster=cluster, name="empty", memory_mb=8192, cpu_usage_percent=0)
    some = HostFactory(cluster=cluster, name="some", memory_mb=8192, cpu_usage_percent=40)
    most = HostFactory(cluster=cluster, name="most", memory_mb=8192, cpu_usage_percent=50)
    hot = HostFactory(cluster=cluster, name="hot", memory_mb=8192, cpu_usage_percent=90)
    VMFactory(host=some, status=VMStatus.UP, memory_mb=2048)
    VMFactory(host=most, status=VMStatus.UP, memory_mb=5120)
    VMFactory(host=hot, status=VMStatus.UP, memory_mb=6144)
    vm = VMFactory(host=None, cluster=cluster, memory_mb=1024)
    assert schedule(vm, purpose=Purpose.RUN) == most  # 2048 MB left: over 1024
    vm.memory_mb = 2560  # would leave most 512 MB: over-utilized; some stays under
    assert schedule(vm, purpose=Purpose.RUN) == some
    Host.objects.filter(pk=some.pk).update(cpu_usage_percent=85)
    assert schedule(vm, purpose=Purpose.RUN) == empty  # the only one left under the thresholds
    assert hot.pk not in (empty.pk, some.pk, most.pk)


# -- the balancer --------------------------------------------------------------------------------


def test_corrections_are_an_ordered_list_of_named_checks():
    assert [c.name for c in CORRECTIONS] == ["affinity", "evenly_distributed", "power_saving"]


def test_evenly_moves_one_vm_off_an_over_utilized_host_with_an_event(
    hosts, make_vm, balance, work_off
):
    h1, h2, h3 = hosts
    for name, memory in (("big", 2048), ("small", 512), ("mid", 1024)):
        make_vm(status=VMStatus.UP, disks=0, host=h1, name=name, memory_mb=memory)
    make_vm(status=VMStatus.UP, disks=0, host=h2, name="other", memory_mb=1024)
    set_cpu(h1, 92, over_for=LONG_AGO)
    set_cpu(h2, 30)
    set_cpu(h3, 20)
    assert balance() == ["small"]  # the smallest VM of the host, one a cycle
    event = balance_events().get()
    assert event.message.startswith(
        "Load balancing (evenly_distributed) of cluster prod migrates VM small from host h1 to "
        "h3: host h1 has been over-utilized for 3 min (CpuOverCommitDurationMinutes 2): its CPU "
        "is at 92 %, at or over HighUtilization (80 %)."
    )
    assert event.phase == Phase.DETECTED and event.job is not None and event.cluster_id
    assert balance() == ["small"]  # nothing more while a migration runs in the cluster
    work_off()
    assert on_host(h3) == ["small"]
    requested = Event.objects.get(action="migrate", phase=Phase.REQUESTED, vm__name="small")
    assert requested.message == "The system asked to migrate VM small from host h1 to h3."
    assert balance() == ["mid"]  # still over-utilized (its CPU reading is not new)
    work_off()
    set_cpu(h1, 50)
    assert balance() == []
    assert Host.objects.get(pk=h1.pk).over_utilized_since is None


def test_nothing_to_do_without_an_over_utilized_host_or_without_a_policy(
    cluster, hosts, make_vm, balance
):
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="web")
    for h in hosts:
        set_cpu(h, 40)
    assert balance() == []
    assert not balance_events().exists()
    set_cpu(h1, 95, over_for=LONG_AGO)
    cluster.scheduling_policy = SchedulingPolicy.NONE
    cluster.save()
    assert balance() == []
    assert not balance_events().exists()
    assert Host.objects.get(pk=h1.pk).over_utilized_since is None  # a policy turned off forgets


def test_over_utilization_must_last_cpu_over_commit_duration_minutes(
    cluster, hosts, make_vm, balance
):
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="web")
    set_cpu(h1, 95)
    set_cpu(h2, 10)
    set_cpu(h3, 10)
    assert balance() == []  # just began: the balancer notes when
    since = Host.objects.get(pk=h1.pk).over_utilized_since
    assert since is not None
    assert balance() == []
    assert Host.objects.get(pk=h1.pk).over_utilized_since == since  # kept, not restarted
    Host.objects.filter(pk=h1.pk).update(
        over_utilized_since=timezone.now() - timedelta(seconds=110)
    )
    assert balance() == []  # 1 min 50 s of 2 min
    cluster.cpu_overcommit_duration_minutes = 1
    cluster.save()
    assert balance() == ["web"]


def test_vms_that_cannot_move_are_named_once_and_nothing_moves(hosts, make_vm, balance):
    h1, h2, h3 = hosts
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
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="huge", memory_mb=7000)
    make_vm(status=VMStatus.PAUSED, disks=0, host=h1, name="paused")
    make_vm(status=VMStatus.UP, disks=0, host=h2, name="filler", memory_mb=6000)
    set_cpu(h1, 90, over_for=LONG_AGO)
    set_cpu(h2, 10)
    set_cpu(h3, 85)
    assert balance() == []
    warning = balance_events().get()
    assert warning.severity == Severity.WARNING
    assert warning.message == (
        "Load balancing of cluster prod cannot correct: host h1 has been over-utilized for 3 "
        "min (CpuOverCommitDurationMinutes 2): its CPU is at 90 %, at or over HighUtilization "
        "(80 %), but none of its VMs can move (manual: the VM allows manual migration only; "
        "pinned: the VM does not allow migration; huge: no host takes it (h2: not enough free "
        "memory (needs 7000 MB, 2192 MB free); h3: its CPU is at 85 %, at or over "
        "HighUtilization (80 %)))."
    )
    assert balance() == []
    set_cpu(h1, 93)  # only the figures change
    assert balance() == []
    assert balance_events().count() == 1  # said once while it stays so
    assert on_host(h1) == ["huge", "manual", "paused", "pinned"]
    VirtualMachine.objects.filter(name="manual").update(migration_mode=MigrationMode.PINNED)
    assert balance() == []
    assert balance_events().count() == 2  # a new situation is told
    assert "manual: the VM does not allow migration" in balance_events().last().message


def test_at_most_one_migration_per_cluster_and_cycle(hosts, make_vm, balance, work_off):
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="a")
    make_vm(status=VMStatus.UP, disks=0, host=h2, name="b")
    set_cpu(h1, 90, over_for=LONG_AGO)
    set_cpu(h2, 95, over_for=LONG_AGO)
    set_cpu(h3, 5)
    assert balance() == ["b"]  # the most loaded host first
    work_off()
    assert balance() == ["a"]


def test_no_move_while_a_migration_runs_in_the_cluster(hosts, make_vm, balance):
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="web")
    mover = make_vm(status=VMStatus.UP, disks=0, host=h2, name="mover")
    VirtualMachine.objects.filter(pk=mover.pk).update(
        status=VMStatus.MIGRATING_FROM, migrating_to=h3
    )
    set_cpu(h1, 90, over_for=LONG_AGO)
    set_cpu(h3, 5)
    assert balance() == ["mover"]
    assert not balance_events().exists()


def test_memory_over_utilization_moves_a_vm_too(cluster, hosts, make_vm, balance):
    cluster.max_free_memory_for_over_utilized = 2048
    cluster.save()
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="a", memory_mb=3072)
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="b", memory_mb=4096)
    for h in hosts:
        set_cpu(h, 10, over_for=LONG_AGO if h == h1 else None)
    assert balance() == ["a"]
    assert "it has 1024 MB free memory, under MaxFreeMemoryForOverUtilized (2048 MB)" in (
        balance_events().get().message
    )


def test_power_saving_empties_the_least_loaded_under_utilized_host_onto_a_busier_one(
    cluster, hosts, make_vm, balance, work_off
):
    cluster.scheduling_policy = POWER
    cluster.save()
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="lonely", memory_mb=512)
    make_vm(status=VMStatus.UP, disks=0, host=h2, name="a", memory_mb=2048)
    make_vm(status=VMStatus.UP, disks=0, host=h2, name="b", memory_mb=2048)
    set_cpu(h1, 5, under_for=LONG_AGO)
    set_cpu(h2, 10, under_for=LONG_AGO)
    set_cpu(h3, 0, under_for=LONG_AGO)  # empty: nothing to move off it
    assert balance() == ["lonely"]
    assert balance_events().get().message == (
        "Load balancing (power_saving) of cluster prod migrates VM lonely from host h1 to h2: "
        "host h1 has been under-utilized for 3 min (CpuOverCommitDurationMinutes 2): its CPU is "
        "at 5 %, under LowUtilization (20 %); power_saving empties it."
    )
    work_off()
    assert on_host(h2) == ["a", "b", "lonely"]
    # Now h2 is the only host with VMs: none goes to the emptier hosts (no ping-pong).
    assert balance() == []
    assert balance_events().count() == 1


def test_power_saving_under_utilization_must_last_too(cluster, hosts, make_vm, balance):
    cluster.scheduling_policy = POWER
    cluster.save()
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="lonely", memory_mb=512)
    make_vm(status=VMStatus.UP, disks=0, host=h2, name="a", memory_mb=2048)
    set_cpu(h1, 5)
    set_cpu(h2, 50)
    set_cpu(h3, 50)
    assert balance() == []
    assert Host.objects.get(pk=h1.pk).under_utilized_since is not None
    assert Host.objects.get(pk=h2.pk).under_utilized_since is None
    Host.objects.filter(pk=h1.pk).update(under_utilized_since=timezone.now() - LONG_AGO)
    assert balance() == ["lonely"]


def test_power_saving_relieves_an_over_utilized_host_first(cluster, hosts, make_vm):
    cluster.scheduling_policy = POWER
    cluster.save()
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="hot-vm")
    make_vm(status=VMStatus.UP, disks=0, host=h2, name="cold-vm")
    set_cpu(h1, 90, over_for=LONG_AGO)
    set_cpu(h2, 5, under_for=LONG_AGO)
    set_cpu(h3, 50)
    vm, reason = power_saving(cluster)
    assert vm.name == "hot-vm" and "over-utilized" in reason


def test_a_correction_says_blocked_or_nothing(cluster, hosts, make_vm):
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="p", migration_mode=MigrationMode.PINNED)
    set_cpu(h1, 90, over_for=LONG_AGO)
    assert isinstance(balancing.evenly_distributed(cluster), Blocked)
    assert balancing.power_saving(cluster) is None  # not this cluster's policy


def test_an_appended_correction_runs_after_the_policies(hosts, make_vm, balance, monkeypatch):
    h1, h2, h3 = hosts
    vm = make_vm(status=VMStatus.UP, disks=0, host=h1, name="apart")
    for h in hosts:
        set_cpu(h, 10)
    seen = []

    def broken_group(cluster):
        seen.append(cluster.name)
        return VirtualMachine.objects.get(pk=vm.pk), "a test group is broken"

    monkeypatch.setattr(
        balancing,
        "CORRECTIONS",
        [*CORRECTIONS, balancing.Correction("test_group", broken_group)],
    )
    assert balance() == ["apart"]
    assert seen == ["prod"]
    assert balance_events().get().message.endswith(": a test group is broken.")


def test_the_balancer_mends_a_broken_enforcing_affinity_group_first(
    hosts, make_vm, balance, admin, work_off
):
    """Two VMs of a Negative Enforcing group that share a host (started there before the group
    was made): one cycle moves one of them away, with an Event naming the group; the next has
    nothing to do."""
    h1, h2, h3 = hosts
    a = make_vm(status=VMStatus.UP, disks=0, host=h1, name="db-a", memory_mb=512)
    b = make_vm(status=VMStatus.UP, disks=0, host=h1, name="db-b", memory_mb=512)
    for h in hosts:
        set_cpu(h, 10)
    affinity_group_create(
        user=admin, cluster_id=h1.cluster_id, name="apart", vm_rule=NEGATIVE, vm_ids=[a.pk, b.pk]
    )
    moving = balance()
    assert len(moving) == 1 and moving[0] in {"db-a", "db-b"}
    work_off()
    assert {VirtualMachine.objects.get(pk=v.pk).host_id for v in (a, b)} == {h1.pk} | {
        VirtualMachine.objects.get(name=moving[0]).host_id
    }
    assert VirtualMachine.objects.get(name=moving[0]).host_id != h1.pk
    event = balance_events().get()
    assert event.message.startswith("Load balancing (affinity) of cluster prod migrates VM")
    assert "apart" in event.message
    assert balance() == []


def test_a_host_not_up_is_neither_source_nor_tracked(hosts, make_vm, balance):
    h1, h2, h3 = hosts
    make_vm(status=VMStatus.UP, disks=0, host=h1, name="web")
    set_cpu(h1, 99, over_for=LONG_AGO)
    set_cpu(h2, 5)
    Host.objects.filter(pk=h1.pk).update(status=HostStatus.NON_RESPONSIVE)
    assert balance() == []
    assert Host.objects.get(pk=h1.pk).over_utilized_since is None


# -- the monitor ----------------------------------------------------------------------------------


def test_the_monitor_measures_host_cpu_and_runs_the_balancer_when_due(
    cluster, hosts, make_vm, monitor, settings, django_capture_on_commit_callbacks, work_off
):
    h1, h2, h3 = hosts
    for n in range(4):  # 4 running domains on a test node's 16 CPUs: one CPU's worth each
        make_vm(status=VMStatus.UP, disks=0, host=h1, name=f"web{n}", memory_mb=512)
    cluster.cpu_overcommit_duration_minutes = 1
    cluster.high_utilization = 25
    cluster.save()
    settings.VIREO_BALANCE_SECONDS = 3600
    monitor.cycle()
    assert Host.objects.get(pk=h1.pk).cpu_usage_percent is None  # one reading: no delta yet
    monitor.cycle()
    usage = dict(Host.objects.values_list("name", "cpu_usage_percent"))
    assert usage == {"h1": 25, "h2": 0, "h3": 0}
    assert Host.objects.get(pk=h1.pk).over_utilized_since is None  # the balancer is not due
    settings.VIREO_BALANCE_SECONDS = 0
    monitor.cycle()
    assert Host.objects.get(pk=h1.pk).over_utilized_since is not None
    assert not VirtualMachine.objects.filter(status=VMStatus.MIGRATING_FROM).exists()
    Host.objects.filter(pk=h1.pk).update(over_utilized_since=timezone.now() - LONG_AGO)
    with django_capture_on_commit_callbacks(execute=True):
        monitor.cycle()
    assert VirtualMachine.objects.filter(status=VMStatus.MIGRATING_FROM).count() == 1
    work_off()
    monitor.cycle()
    usage = dict(Host.objects.values_list("name", "cpu_usage_percent"))
    assert usage == {"h1": 19, "h2": 6, "h3": 0}  # 3 and 1 of 16 CPUs: web0 moved to h2
    assert balance_events().count() == 1
