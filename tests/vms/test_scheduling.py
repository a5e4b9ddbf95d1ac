"""The scheduler (issue 11 item 3): each named filter and the weight, the refusal that names
why every host was ruled out, and New VM / Run placing VMs through it."""

import pytest
from factories import ClusterFactory, DiskFactory, HostFactory, StorageDomainFactory, VMFactory

import hypervisor
from portal.kernel.errors import ActionRefused
from storage.choices import StorageType
from vms import scheduling, services
from vms.choices import HostStatus, MemoryOptimization, MigrationMode, VMStatus
from vms.models import VirtualMachine
from vms.scheduling import FILTERS, WEIGHTS, NoHostAvailable, Purpose, schedule

pytestmark = pytest.mark.django_db


def reasons(vm, purpose=Purpose.RUN, **kwargs) -> dict[str, str]:
    with pytest.raises(NoHostAvailable) as exc:
        schedule(vm, purpose=purpose, **kwargs)
    return exc.value.reasons


def test_the_pipeline_is_named_filters_and_weights():
    assert [f.name for f in FILTERS] == [
        "host_up",
        "same_cluster",
        "host_devices",
        "ha_start_host",
        "storage",
        "memory",
        "cpu",
        "migration_allowed",
        "cpu_passthrough",
        "vm_affinity",
        "vm_to_host_affinity",
        "balance_headroom",
    ]
    assert [w.name for w in WEIGHTS] == [
        "least_loaded",
        "cpu_load",
        "power_saving",
        "vm_affinity",
        "vm_to_host_affinity",
    ]


def test_host_up_filter():
    host = HostFactory(name="node1", status=HostStatus.MAINTENANCE)
    vm = VMFactory(host=None, cluster=host.cluster)
    assert reasons(vm) == {"node1": "the host is Maintenance"}
    host.status = HostStatus.UP
    host.save()
    assert schedule(vm) == host


def test_same_cluster_filter():
    vm = VMFactory()
    elsewhere = HostFactory(name="far")
    assert reasons(vm, candidates=[elsewhere]) == {
        "far": f"the host is in cluster {elsewhere.cluster.name}, not {vm.cluster.name}"
    }


def test_memory_filter_counts_running_vms_and_the_cluster_overcommit():
    host = HostFactory(name="node1", memory_mb=8192)
    VMFactory(host=host, status=VMStatus.UP, memory_mb=4096)
    VMFactory(host=host, status=VMStatus.POWERING_UP, memory_mb=3072)
    VMFactory(host=host, status=VMStatus.DOWN, memory_mb=60000)  # at rest: commits nothing
    VMFactory(host=host, status=VMStatus.SUSPENDED, memory_mb=60000)
    vm = VMFactory(host=host, memory_mb=2048)
    assert reasons(vm) == {"node1": "not enough free memory (needs 2048 MB, 1024 MB free)"}
    host.cluster.memory_overcommit_percent = MemoryOptimization.SERVER  # 12288 MB may commit
    host.cluster.save()
    assert schedule(vm) == host
    # The VM scheduled is not counted against itself (a Run of a VM seen Up meanwhile).
    vm.memory_mb = 5120
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.UP, memory_mb=5120)
    assert schedule(vm, purpose=Purpose.RUN) == host


def test_memory_and_cpu_of_a_host_not_read_yet_rule_it_out():
    host = HostFactory(name="node1", memory_mb=0, cpus=0)
    vm = VMFactory(host=host)
    assert "its memory is not known yet" in reasons(vm)["node1"]
    host.memory_mb = 4096
    host.save()
    assert "its CPUs are not known yet" in reasons(vm)["node1"]


def test_cpu_filter():
    host = HostFactory(name="node1", cpus=4)
    vm = VMFactory(host=host, vcpus=8)
    assert reasons(vm) == {"node1": "too few CPUs (the VM has 8 vCPUs, the host 4)"}
    vm.vcpus = 4
    assert schedule(vm) == host


def test_migration_allowed_filter_reads_the_vm_migration_mode():
    source = HostFactory(name="source")
    target = HostFactory(name="target", cluster=source.cluster)
    vm = VMFactory(host=source, status=VMStatus.UP)
    assert schedule(vm, purpose=Purpose.MIGRATE, exclude=[source.pk]) == target
    assert schedule(vm, purpose=Purpose.MIGRATE, exclude=[source.pk], automatic=True) == target
    vm.migration_mode = MigrationMode.USER_MIGRATABLE
    assert schedule(vm, purpose=Purpose.MIGRATE, exclude=[source.pk]) == target
    assert reasons(vm, Purpose.MIGRATE, exclude=[source.pk], automatic=True) == {
        "target": "the VM allows manual migration only"
    }
    vm.migration_mode = MigrationMode.PINNED
    assert reasons(vm, Purpose.MIGRATE, exclude=[source.pk]) == {
        "target": "the VM does not allow migration"
    }
    assert schedule(vm, purpose=Purpose.RUN) in (source, target)  # Run is not a migration


def test_storage_filter_keeps_a_vm_with_a_local_disk_on_its_host():
    home = HostFactory(name="home")
    other = HostFactory(name="other", cluster=home.cluster)
    vm = VMFactory(host=home)
    local = StorageDomainFactory(data_center=vm.cluster.data_center)
    DiskFactory(vm=vm, alias="vm_Disk1", storage_domain=local, host=home)
    assert reasons(vm, exclude=[home.pk]) == {
        "other": "the VM's disk vm_Disk1 is on the local storage of host home"
    }
    local.storage_type = StorageType.NFS
    local.save()
    assert schedule(vm, exclude=[home.pk]) == other


def test_least_loaded_weight_prefers_the_host_with_the_least_committed_memory():
    busy = HostFactory(name="a-busy", memory_mb=16384)
    idle = HostFactory(name="b-idle", memory_mb=16384, cluster=busy.cluster)
    big = HostFactory(name="c-big", memory_mb=65536, cluster=busy.cluster)
    VMFactory(host=busy, status=VMStatus.UP, memory_mb=8192)
    VMFactory(host=idle, status=VMStatus.UP, memory_mb=4096)
    VMFactory(host=big, status=VMStatus.UP, memory_mb=8192)
    vm = VMFactory(host=None, cluster=busy.cluster, memory_mb=1024)
    request = scheduling.Request(vm=vm, purpose=Purpose.RUN, local_disks=())
    kept, why = scheduling.evaluate(request, scheduling.candidates_of(vm))
    assert [c.host.name for c in kept] == ["c-big", "b-idle", "a-busy"] and why == {}
    assert kept[0].committed_mb == 8192 and kept[0].running == 1


def test_the_refusal_names_each_host_and_why():
    cluster = ClusterFactory(name="prod")
    HostFactory(name="host1", cluster=cluster, status=HostStatus.NON_RESPONSIVE)
    full = HostFactory(name="host2", cluster=cluster, memory_mb=5120)
    VMFactory(host=full, status=VMStatus.UP, memory_mb=4096)
    HostFactory(name="host3", cluster=cluster, cpus=2)
    vm = VMFactory(name="db", host=None, cluster=cluster, memory_mb=4096, vcpus=4)
    with pytest.raises(NoHostAvailable) as exc:
        schedule(vm)
    assert str(exc.value) == (
        "No host in cluster prod can run db: host1: the host is Non Responsive; "
        "host2: not enough free memory (needs 4096 MB, 1024 MB free); "
        "host3: too few CPUs (the VM has 4 vCPUs, the host 2)."
    )
    assert isinstance(exc.value, ActionRefused)


def test_new_vm_is_placed_by_the_scheduler_on_the_least_loaded_up_host(admin):
    from test_vm_create_services import create

    busy = HostFactory(name="a-busy")
    idle = HostFactory(name="b-idle", cluster=busy.cluster)
    HostFactory(name="c-off", cluster=busy.cluster, status=HostStatus.MAINTENANCE)
    VMFactory(host=busy, status=VMStatus.UP, memory_mb=8192)
    domain = StorageDomainFactory(data_center=busy.cluster.data_center)
    assert create(admin, busy, domain).host == idle


def test_run_places_a_vm_whose_host_is_down_on_another_host(admin, sync_hosts, work):
    vm = VMFactory(status=VMStatus.DOWN)
    first = vm.host
    shared = StorageDomainFactory(data_center=vm.cluster.data_center, storage_type=StorageType.NFS)
    DiskFactory(vm=vm, storage_domain=shared, host=None)  # every host reaches it
    second = HostFactory(cluster=vm.cluster)
    sync_hosts(first, second)
    first.status = HostStatus.NON_RESPONSIVE
    first.save()
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert (vm.status, vm.host) == (VMStatus.UP, second)
    assert hypervisor.connect(second.uri).get_domain(str(vm.uuid)).state == "running"


def test_run_places_a_vm_without_a_host(admin, sync_hosts, work):
    host = HostFactory()
    sync_hosts(host)
    vm = VMFactory(host=None, cluster=host.cluster, status=VMStatus.DOWN)
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert (vm.status, vm.host) == (VMStatus.UP, host)


def test_run_moves_a_vm_off_a_host_without_room(admin, sync_hosts, work):
    crowded = HostFactory(name="crowded", memory_mb=4096)
    roomy = HostFactory(name="roomy", cluster=crowded.cluster)
    VMFactory(host=crowded, status=VMStatus.UP, memory_mb=3072)
    vm = VMFactory(host=crowded, memory_mb=2048)
    sync_hosts(crowded, roomy)
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert (vm.status, vm.host) == (VMStatus.UP, roomy)


def test_run_refused_says_what_is_wrong_with_its_host_and_the_others(admin):
    home = HostFactory(name="home", memory_mb=4096)
    HostFactory(name="other", cluster=home.cluster, status=HostStatus.MAINTENANCE)
    VMFactory(host=home, status=VMStatus.UP, memory_mb=3072)
    vm = VMFactory(name="web", host=home, memory_mb=2048)
    with pytest.raises(ActionRefused) as exc:
        services.vm_run(vm_id=vm.pk, user=admin)
    assert str(exc.value) == (
        "Cannot run web: on its host home, not enough free memory (needs 2048 MB, 1024 MB free). "
        f"No other host of cluster {home.cluster.name} can run it: other: the host is Maintenance."
    )
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.DOWN


def test_start_running_on_goes_through_the_scheduler(admin):
    vm = VMFactory(status=VMStatus.DOWN, vcpus=8)
    small = HostFactory(name="small", cluster=vm.cluster, cpus=4)
    services.vm_edit(
        vm_id=vm.pk,
        user=admin,
        description="",
        sso_enabled=True,
        start_host_id=small.pk,
    )
    with pytest.raises(ActionRefused) as exc:
        services.vm_run(vm_id=vm.pk, user=admin)
    assert str(exc.value) == (
        f"Cannot run {vm.name} on small: too few CPUs (the VM has 8 vCPUs, the host 4)."
    )
    assert VirtualMachine.objects.get(pk=vm.pk).host_id == vm.host_id


def test_the_refusal_groups_hosts_with_the_same_reason_and_counts_past_five():
    cluster = ClusterFactory(name="big")
    for n in range(8):
        HostFactory(name=f"node{n}", cluster=cluster, status=HostStatus.MAINTENANCE)
    HostFactory(name="tiny", cluster=cluster, cpus=1)
    vm = VMFactory(name="app", host=None, cluster=cluster, vcpus=2)
    with pytest.raises(NoHostAvailable) as exc:
        schedule(vm)
    assert str(exc.value) == (
        "No host in cluster big can run app: node0, node1, node2, node3, node4 and 3 more: "
        "the host is Maintenance; tiny: too few CPUs (the VM has 2 vCPUs, the host 1)."
    )
    assert len(exc.value.reasons) == 9


def test_the_chosen_host_is_filtered_again_under_its_lock(monkeypatch):
    """Another request fills the best host between this one's read and its lock (as two Runs
    racing for the last free memory): the re-check under the lock sees it and takes the next."""
    best = HostFactory(name="a-best", memory_mb=8192)
    next_best = HostFactory(name="b-next", memory_mb=8192, cluster=best.cluster)
    VMFactory(host=next_best, status=VMStatus.UP, memory_mb=2048)
    vm = VMFactory(host=None, cluster=best.cluster, memory_mb=4096)
    locked = []
    real_lock = scheduling.host_status_locked

    def racing_lock(host_id):
        if not locked:  # the other request's VM starts on the best host meanwhile
            VMFactory(host=best, status=VMStatus.POWERING_UP, memory_mb=6144)
        locked.append(host_id)
        return real_lock(host_id)

    monkeypatch.setattr(scheduling, "host_status_locked", racing_lock)
    assert schedule(vm) == next_best
    assert locked == [best.pk, next_best.pk]
