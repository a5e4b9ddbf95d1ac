"""vms.services: the status table decides, the conditional update settles races, nothing is
changed when a request is refused, and every accepted request is recorded as "requested"."""

import threading

import pytest
from django.db import connection
from factories import (
    ClusterFactory,
    DataCenterFactory,
    DiskFactory,
    HostFactory,
    StorageDomainFactory,
    UserFactory,
    VMFactory,
)
from helpers import GiB
from rq import Queue

import portal.tasks
from portal.errors import ActionRefused
from portal.models import Event, Job, JobStatus, Phase
from storage.choices import DiskStatus
from storage.models import Disk
from vms import services
from vms.choices import (
    TRANSITIONS,
    HostStatus,
    VMAction,
    VMStatus,
    allowed_actions,
    busy_status_for,
)
from vms.models import Cluster, Host, VirtualMachine


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """Users are made in nearly every test here; a slow password hash only costs time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def call_action(action: str, vm: VirtualMachine, user, **kwargs):
    """Call the service for `action` on `vm` (Clone VM under a fresh name)."""
    if action == VMAction.REMOVE:
        return services.vm_remove(vm_id=vm.pk, user=user, **kwargs)
    if action == VMAction.CLONE:
        return services.vm_clone(vm_id=vm.pk, user=user, clone_name=f"{vm.name}-copy", **kwargs)
    service = {
        VMAction.RUN: services.vm_run,
        VMAction.SHUTDOWN: services.vm_shutdown,
        VMAction.POWER_OFF: services.vm_poweroff,
        VMAction.SUSPEND: services.vm_suspend,
        VMAction.REBOOT: services.vm_reboot,
    }[action]
    return service(vm_id=vm.pk, user=user, **kwargs)


def snapshot(vm: VirtualMachine) -> tuple:
    """What a refused request must leave unchanged."""
    vm.refresh_from_db()
    return (
        vm.status,
        vm.status_changed_at,
        Job.objects.count(),
        Event.objects.count(),
        VirtualMachine.objects.count(),
        sorted(Disk.objects.values_list("pk", "status")),
    )


def closed_queue() -> Queue:
    """A queue on a Redis that is not there."""
    from redis import Redis

    return Queue("default", connection=Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=1))


# -- the status table ------------------------------------------------------------------------

ALL_CASES = [(action, status) for action in TRANSITIONS for status in VMStatus.values]


@pytest.mark.parametrize(
    ("action", "status"),
    [c for c in ALL_CASES if c[0] in allowed_actions(c[1])],
)
def test_legal_transition_moves_to_busy_status_and_creates_the_job(admin, action, status):
    vm = VMFactory(status=status)
    DiskFactory(vm=vm)
    result = call_action(action, vm, admin)
    vm.refresh_from_db()
    assert vm.status == busy_status_for(action, status)
    (job,) = Job.objects.all()
    assert job.vm_id == vm.pk
    assert job.status == JobStatus.QUEUED
    assert job.kind == f"vm_{action}"
    assert job.user == admin
    assert job.params["from_status"] == status
    (event,) = Event.objects.all()
    assert (event.phase, event.action, event.vm_id, event.job_id, event.user_id) == (
        Phase.REQUESTED,
        action,
        vm.pk,
        job.pk,
        admin.pk,
    )
    assert event.message.startswith(f"{admin.username} asked to ")
    assert vm.name in event.message
    if action == VMAction.CLONE:
        assert result.status == VMStatus.IMAGE_LOCKED
        assert job.result_vm_id == result.pk
    else:
        assert result == job


@pytest.mark.parametrize(
    ("action", "status"),
    [c for c in ALL_CASES if c[0] not in allowed_actions(c[1])],
)
def test_illegal_transition_is_refused_and_changes_nothing(admin, action, status):
    vm = VMFactory(status=status)
    DiskFactory(vm=vm)
    before = snapshot(vm)
    label = VMStatus(status).label
    with pytest.raises(ActionRefused, match=rf"Cannot .+ {vm.name}: the VM is {label}\.$"):
        call_action(action, vm, admin)
    assert snapshot(vm) == before


def test_table_examples_in_the_chapters_words(admin):
    down = VMFactory(status=VMStatus.DOWN)
    with pytest.raises(ActionRefused) as exc:
        services.vm_suspend(vm_id=down.pk, user=admin)
    assert str(exc.value) == f"Cannot suspend {down.name}: the VM is Down."
    up = VMFactory(status=VMStatus.UP)
    with pytest.raises(ActionRefused, match="Cannot remove .*: the VM is Up"):
        services.vm_remove(vm_id=up.pk, user=admin)
    with pytest.raises(ActionRefused, match="Cannot clone .*: the VM is Up"):
        services.vm_clone(vm_id=up.pk, user=admin, clone_name="fine-name")
    assert not VirtualMachine.objects.filter(name="fine-name").exists()
    assert not Job.objects.exists()


def test_run_from_suspended_shows_restoring_state(admin):
    vm = VMFactory(status=VMStatus.SUSPENDED)
    services.vm_run(vm_id=vm.pk, user=admin)
    vm.refresh_from_db()
    assert vm.status == VMStatus.RESTORING_STATE


def test_unknown_action_and_missing_vm_are_refused(admin):
    vm = VMFactory(status=VMStatus.UP)
    with pytest.raises(ActionRefused, match="Unknown action 'remove'"):
        services.vm_action(vm_id=vm.pk, action="remove", user=admin)
    with pytest.raises(ActionRefused, match="does not exist any more"):
        services.vm_shutdown(vm_id=vm.pk + 1000, user=admin)
    assert not Job.objects.exists()
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP


# -- races ---------------------------------------------------------------------------------


def test_second_shutdown_is_refused_with_the_current_status(admin):
    vm = VMFactory(status=VMStatus.UP)
    other = UserFactory(is_superuser=True)
    services.vm_shutdown(vm_id=vm.pk, user=admin)
    with pytest.raises(ActionRefused) as exc:
        services.vm_shutdown(vm_id=vm.pk, user=other)
    assert "Powering Down" in str(exc.value)
    assert Job.objects.count() == 1
    assert Event.objects.filter(phase=Phase.REQUESTED).count() == 1
    vm.refresh_from_db()
    assert vm.status == VMStatus.POWERING_DOWN


def test_lost_race_on_the_conditional_update(admin, monkeypatch):
    """The second admin read the VM while it was still Up: the table check passes but the
    conditional update finds it moved, so the request is refused and nothing is recorded."""
    vm = VMFactory(status=VMStatus.UP)
    stale = services._load_vm(vm.pk)
    services.vm_shutdown(vm_id=vm.pk, user=admin)
    monkeypatch.setattr(services, "_load_vm", lambda vm_id: stale)
    with pytest.raises(ActionRefused) as exc:
        services.vm_poweroff(vm_id=vm.pk, user=admin)
    assert str(exc.value) == (
        f"Cannot power off {vm.name}: it was changed by another request and is now "
        "Powering Down. Nothing was done."
    )
    assert Job.objects.count() == 1
    assert Event.objects.count() == 1
    vm.refresh_from_db()
    assert vm.status == VMStatus.POWERING_DOWN


def test_lost_race_against_removal(admin, monkeypatch):
    vm = VMFactory(status=VMStatus.UP)
    stale = services._load_vm(vm.pk)
    VirtualMachine.objects.filter(pk=vm.pk).delete()
    monkeypatch.setattr(services, "_load_vm", lambda vm_id: stale)
    with pytest.raises(ActionRefused, match="is now removed. Nothing was done."):
        services.vm_shutdown(vm_id=vm.pk, user=admin)
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_admins_racing_in_parallel_only_one_wins(monkeypatch):
    """Two requests in their own transactions both read the VM as Up; PostgreSQL's row lock
    makes the second conditional update see Powering Down, so it is refused."""
    admins = [UserFactory(is_superuser=True), UserFactory(is_superuser=True)]
    vm = VMFactory(status=VMStatus.UP)
    both_loaded = threading.Barrier(2, timeout=10)
    real_load = services._load_vm

    def load_then_wait(vm_id):
        loaded = real_load(vm_id)
        both_loaded.wait()
        return loaded

    monkeypatch.setattr(services, "_load_vm", load_then_wait)
    outcomes: list[object] = []

    def request(user):
        try:
            outcomes.append(services.vm_shutdown(vm_id=vm.pk, user=user))
        except ActionRefused as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(u,)) for u in admins]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    refused = [o for o in outcomes if isinstance(o, ActionRefused)]
    won = [o for o in outcomes if isinstance(o, Job)]
    assert len(won) == 1 and len(refused) == 1, outcomes
    assert "changed by another request and is now Powering Down" in str(refused[0])
    assert Job.objects.count() == 1
    assert Event.objects.filter(phase=Phase.REQUESTED).count() == 1
    vm.refresh_from_db()
    assert vm.status == VMStatus.POWERING_DOWN


@pytest.mark.django_db(transaction=True)
def test_two_clones_racing_for_one_name_only_one_gets_it(monkeypatch):
    """Two admins clone two VMs of one data center to the same name at the same moment: the
    data center's row lock serialises the name check, so the second sees the first's clone."""
    admin = UserFactory(is_superuser=True)
    first = VMFactory(status=VMStatus.DOWN)
    second = VMFactory(status=VMStatus.DOWN, host=HostFactory(cluster=first.cluster))
    both_loaded = threading.Barrier(2, timeout=10)
    real_load = services._load_vm

    def load_then_wait(vm_id):
        loaded = real_load(vm_id)
        both_loaded.wait()
        return loaded

    monkeypatch.setattr(services, "_load_vm", load_then_wait)
    outcomes: list[object] = []

    def request(vm):
        try:
            outcomes.append(services.vm_clone(vm_id=vm.pk, user=admin, clone_name="twin"))
        except ActionRefused as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(vm,)) for vm in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    refused = [o for o in outcomes if isinstance(o, ActionRefused)]
    assert len(refused) == 1 and len(outcomes) == 2, outcomes
    assert "'twin' is already used" in str(refused[0])
    assert VirtualMachine.objects.filter(name="twin").count() == 1
    assert Job.objects.count() == 1


# -- hosts and the queue --------------------------------------------------------------------


def test_host_non_responsive_refuses_every_action(admin):
    host = HostFactory(status=HostStatus.NON_RESPONSIVE)
    up = VMFactory(host=host, status=VMStatus.UP)
    down = VMFactory(host=host, status=VMStatus.DOWN)
    before = snapshot(up)
    with pytest.raises(ActionRefused) as exc:
        services.vm_shutdown(vm_id=up.pk, user=admin)
    assert str(exc.value) == (
        f"Cannot shut down {up.name}: its host {host.name} is Non Responsive."
    )
    with pytest.raises(ActionRefused, match="Non Responsive"):
        services.vm_run(vm_id=down.pk, user=admin)
    with pytest.raises(ActionRefused, match="Non Responsive"):
        services.vm_clone(vm_id=down.pk, user=admin, clone_name="copy")
    # Remove too: its domain and volumes live on that host, and a job that cannot reach it
    # would only leave the VM Unknown.
    down_before = snapshot(down)
    with pytest.raises(ActionRefused, match="Non Responsive"):
        services.vm_remove(vm_id=down.pk, user=admin)
    assert snapshot(up) == before
    assert snapshot(down) == down_before


def test_vm_without_host_cannot_run_but_can_be_removed(admin):
    vm = VMFactory(host=None, cluster=ClusterFactory(), status=VMStatus.DOWN)
    with pytest.raises(ActionRefused, match="it is not placed on any host"):
        services.vm_run(vm_id=vm.pk, user=admin)
    services.vm_remove(vm_id=vm.pk, user=admin)
    assert Job.objects.get().kind == "vm_remove"


@pytest.mark.parametrize("action", [VMAction.SHUTDOWN, VMAction.REMOVE, VMAction.CLONE])
def test_redis_unreachable_refuses_and_changes_nothing(admin, monkeypatch, action):
    status = VMStatus.UP if action == VMAction.SHUTDOWN else VMStatus.DOWN
    vm = VMFactory(status=status)
    DiskFactory(vm=vm)
    before = snapshot(vm)
    monkeypatch.setattr(portal.tasks, "get_queue", closed_queue)
    with pytest.raises(ActionRefused) as exc:
        call_action(action, vm, admin)
    assert "task queue is unreachable" in str(exc.value)
    assert "nothing was changed" in str(exc.value)
    assert snapshot(vm) == before


def test_redis_unreachable_refuses_create(admin, monkeypatch):
    host = HostFactory()
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    monkeypatch.setattr(portal.tasks, "get_queue", closed_queue)
    with pytest.raises(ActionRefused, match="task queue is unreachable"):
        services.vm_create(
            user=admin,
            name="new",
            cluster_id=host.cluster_id,
            memory_mb=1024,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=domain.pk,
        )
    assert not VirtualMachine.objects.exists() and not Disk.objects.exists()


def test_queue_refusing_at_commit_puts_the_vm_back(
    admin, monkeypatch, django_capture_on_commit_callbacks
):
    """Redis answered the ping but refused the enqueue after commit: the Job fails with the
    queue's message and the VM returns to the status it had."""
    vm = VMFactory(status=VMStatus.UP)
    monkeypatch.setattr(services, "queue_ensure_available", lambda: None)
    monkeypatch.setattr(portal.tasks, "get_queue", closed_queue)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.vm_shutdown(vm_id=vm.pk, user=admin)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("The task queue refused the job: ")
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP


# -- shutdown reason ---------------------------------------------------------------------------


def test_shutdown_reason_kept_when_the_cluster_enables_it(admin):
    vm = VMFactory(status=VMStatus.UP)
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_reason_enabled=True)
    job = services.vm_shutdown(vm_id=vm.pk, user=admin, reason="  kernel update  ")
    assert job.params["reason"] == "kernel update"
    event = Event.objects.get(job=job)
    assert event.reason == "kernel update"


def test_shutdown_reason_dropped_when_the_cluster_does_not_ask(admin):
    vm = VMFactory(status=VMStatus.UP)
    assert not vm.cluster.shutdown_reason_enabled
    job = services.vm_shutdown(vm_id=vm.pk, user=admin, reason="kernel update")
    assert job.params["reason"] == ""
    assert Event.objects.get(job=job).reason == ""


def test_shutdown_reason_is_capped(admin):
    vm = VMFactory(status=VMStatus.UP)
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_reason_enabled=True)
    job = services.vm_shutdown(vm_id=vm.pk, user=admin, reason="x" * 5000)
    assert job.params["reason"] == "x" * 1000


def test_reason_is_only_for_shutdown(admin):
    vm = VMFactory(status=VMStatus.UP)
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_reason_enabled=True)
    job = services.vm_action(
        vm_id=vm.pk, action=VMAction.POWER_OFF, user=admin, reason="not for power off"
    )
    assert job.params["reason"] == ""
    assert Event.objects.get(job=job).reason == ""


# -- remove ----------------------------------------------------------------------------------


@pytest.mark.parametrize("remove_disks", [True, False])
def test_remove_locks_the_disks_and_keeps_the_choice(admin, remove_disks):
    vm = VMFactory(status=VMStatus.DOWN)
    disks = [DiskFactory(vm=vm), DiskFactory(vm=vm, target="vdb")]
    other = DiskFactory(vm=VMFactory(host=vm.host, status=VMStatus.DOWN))
    job = services.vm_remove(vm_id=vm.pk, user=admin, remove_disks=remove_disks)
    assert job.params["remove_disks"] is remove_disks
    for disk in disks:
        disk.refresh_from_db()
        assert disk.status == DiskStatus.LOCKED
    other.refresh_from_db()
    assert other.status == DiskStatus.OK
    assert Event.objects.get(job=job).message == f"{admin.username} asked to remove VM {vm.name}."


# -- clone names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clone_name", "message"),
    [
        ("", "Clone Name is required."),
        ("   ", "Clone Name is required."),
        ("a" * 256, "Clone Name is too long: 256 characters, at most 255."),
        ("my clone", "Clone Name may contain only letters, digits, '-', '_' and '.'."),
        ("a/b", "Clone Name may contain only letters, digits"),
        ("vm;rm", "Clone Name may contain only letters, digits"),
        ("café", "Clone Name may contain only letters, digits"),
        ("tab\there", "Clone Name may contain only letters, digits"),
    ],
)
def test_clone_name_rules(admin, clone_name, message):
    vm = VMFactory(status=VMStatus.DOWN)
    before = snapshot(vm)
    with pytest.raises(ActionRefused) as exc:
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name=clone_name)
    assert str(exc.value).startswith(message)
    assert snapshot(vm) == before


def test_clone_name_of_255_characters_is_allowed(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    clone = services.vm_clone(vm_id=vm.pk, user=admin, clone_name="a" * 255)
    assert clone.name == "a" * 255


def test_clone_name_taken_in_the_same_cluster(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    VMFactory(name="taken", host=vm.host)
    before = snapshot(vm)
    with pytest.raises(ActionRefused) as exc:
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name="taken")
    assert str(exc.value) == (
        "Clone Name 'taken' is already used by another virtual machine in this data center."
    )
    assert snapshot(vm) == before
    with pytest.raises(ActionRefused, match="already used"):
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name=vm.name)


def test_clone_name_taken_in_another_cluster_of_the_data_center(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    other_cluster = ClusterFactory(data_center=vm.cluster.data_center)
    VMFactory(name="elsewhere", host=HostFactory(cluster=other_cluster))
    with pytest.raises(ActionRefused, match="'elsewhere' is already used"):
        services.vm_clone(vm_id=vm.pk, user=admin, clone_name="elsewhere")
    assert VirtualMachine.objects.filter(name="elsewhere").count() == 1


def test_clone_name_used_in_another_data_center_is_allowed(admin):
    vm = VMFactory(status=VMStatus.DOWN)
    VMFactory(name="shared-name", host=HostFactory(cluster__data_center=DataCenterFactory()))
    clone = services.vm_clone(vm_id=vm.pk, user=admin, clone_name=" shared-name ")
    assert clone.name == "shared-name"
    assert VirtualMachine.objects.filter(name="shared-name").count() == 2


def test_clone_makes_an_image_locked_copy(admin):
    vm = VMFactory(status=VMStatus.DOWN, memory_mb=2048, vcpus=3, description="web tier")
    clone = services.vm_clone(vm_id=vm.pk, user=admin, clone_name="web-2")
    clone.refresh_from_db()
    assert (clone.status, clone.memory_mb, clone.vcpus, clone.description) == (
        VMStatus.IMAGE_LOCKED,
        2048,
        3,
        "web tier",
    )
    assert (clone.cluster_id, clone.host_id, clone.created_by) == (vm.cluster_id, vm.host_id, admin)
    vm.refresh_from_db()
    assert vm.status == VMStatus.IMAGE_LOCKED
    job = Job.objects.get()
    assert (job.kind, job.vm_id, job.result_vm_id) == ("vm_clone", vm.pk, clone.pk)
    assert Event.objects.get().message == f"{admin.username} asked to clone VM {vm.name} to web-2."


# -- create ----------------------------------------------------------------------------------


def create(admin, host, domain, **overrides):
    fields = dict(
        user=admin,
        name="fresh",
        cluster_id=host.cluster_id,
        memory_mb=1024,
        vcpus=2,
        disk_bytes=2 * GiB,
        storage_domain_id=domain.pk,
    )
    return services.vm_create(**{**fields, **overrides})


@pytest.fixture
def placement(db):
    host = HostFactory()
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    return host, domain


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("memory_mb", 63, "Memory must be between 64 and 4,194,304 MB."),
        ("memory_mb", 4 * 1024 * 1024 + 1, "Memory must be between 64 and 4,194,304 MB."),
        ("memory_mb", "lots", "Memory must be a whole number."),
        ("memory_mb", None, "Memory must be a whole number."),
        ("vcpus", 0, "vCPUs must be between 1 and 256."),
        ("vcpus", 257, "vCPUs must be between 1 and 256."),
        ("vcpus", "2.5", "vCPUs must be a whole number."),
        ("disk_bytes", 1024, "Disk size must be between 1,048,576 and"),
        ("disk_bytes", 64 * 1024**4 + 1, "Disk size must be between 1,048,576 and"),
    ],
)
def test_create_out_of_range_is_refused(admin, placement, field, value, message):
    with pytest.raises(ActionRefused) as exc:
        create(admin, *placement, **{field: value})
    assert str(exc.value).startswith(message)
    assert not VirtualMachine.objects.exists() and not Job.objects.exists()


@pytest.mark.parametrize(("memory_mb", "vcpus"), [(64, 1), (4 * 1024 * 1024, 256)])
def test_create_accepts_the_bounds(admin, placement, memory_mb, vcpus):
    vm = create(admin, *placement, memory_mb=memory_mb, vcpus=vcpus)
    assert (vm.memory_mb, vm.vcpus) == (memory_mb, vcpus)


@pytest.mark.parametrize("sparse", [True, False])
def test_create_records_the_vm_its_disk_and_the_job(admin, placement, sparse):
    host, domain = placement
    vm = create(admin, host, domain, sparse=sparse, description="d" * 2000)
    vm.refresh_from_db()
    assert (vm.status, vm.host, vm.cluster_id, vm.created_by) == (
        VMStatus.IMAGE_LOCKED,
        host,
        host.cluster_id,
        admin,
    )
    assert len(vm.description) == 1000
    disk = Disk.objects.get(vm=vm)
    assert (disk.alias, disk.size_bytes, disk.sparse, disk.status, disk.host) == (
        "fresh_Disk1",
        2 * GiB,
        sparse,
        DiskStatus.LOCKED,
        host,
    )
    assert disk.volume_name == f"{vm.uuid}-disk1.{'qcow2' if sparse else 'img'}"
    job = Job.objects.get()
    assert (job.kind, job.vm_id, job.status) == ("vm_create", vm.pk, JobStatus.QUEUED)
    event = Event.objects.get()
    assert (event.phase, event.action, event.job_id) == (Phase.REQUESTED, "create", job.pk)
    assert event.message == f"{admin.username} asked to create VM fresh on host {host.name}."


def test_create_name_rules_apply(admin, placement):
    host, domain = placement
    VMFactory(name="dup", host=HostFactory(cluster__data_center=host.cluster.data_center))
    with pytest.raises(ActionRefused, match="Name 'dup' is already used"):
        create(admin, host, domain, name="dup")
    with pytest.raises(ActionRefused, match="^Name may contain only"):
        create(admin, host, domain, name="no spaces")
    assert VirtualMachine.objects.count() == 1


def test_create_refusals_about_placement(admin, placement):
    host, domain = placement
    foreign = StorageDomainFactory()  # another data center
    with pytest.raises(ActionRefused, match="Choose a data storage domain"):
        create(admin, host, foreign)
    with pytest.raises(ActionRefused, match="That cluster does not exist"):
        create(admin, host, domain, cluster_id=host.cluster_id + 1000)
    domain.free_bytes = GiB
    domain.save()
    with pytest.raises(ActionRefused, match="Not enough free space"):
        create(admin, host, domain, sparse=False)
    create(admin, host, domain, sparse=True)  # thin disks may overcommit
    Host.objects.filter(pk=host.pk).update(status=HostStatus.NON_RESPONSIVE)
    with pytest.raises(ActionRefused, match="No host in cluster .* is Up"):
        create(admin, host, domain, name="second")
    assert VirtualMachine.objects.count() == 1


def test_create_places_the_vm_on_the_least_busy_host(admin, placement):
    busy, domain = placement
    idle = HostFactory(cluster=busy.cluster)
    VMFactory(host=busy, status=VMStatus.UP)
    VMFactory(host=idle, status=VMStatus.DOWN)
    assert create(admin, busy, domain).host == idle


# -- clusters and hosts ------------------------------------------------------------------------


def test_cluster_update(admin):
    cluster = ClusterFactory()
    services.cluster_update(
        cluster_id=cluster.pk,
        user=admin,
        shutdown_reason_enabled=True,
        shutdown_timeout="300",
        description="edited",
    )
    cluster.refresh_from_db()
    assert (cluster.shutdown_reason_enabled, cluster.shutdown_timeout, cluster.description) == (
        True,
        300,
        "edited",
    )
    event = Event.objects.get()
    assert (event.phase, event.cluster, event.object_type) == (Phase.SUCCEEDED, cluster, "cluster")
    for bad in (4, 3601, "soon"):
        with pytest.raises(ActionRefused, match="Graceful shutdown timeout"):
            services.cluster_update(
                cluster_id=cluster.pk,
                user=admin,
                shutdown_reason_enabled=False,
                shutdown_timeout=bad,
            )
    cluster.refresh_from_db()
    assert cluster.shutdown_timeout == 300 and cluster.shutdown_reason_enabled


def test_host_add(admin):
    cluster = ClusterFactory()
    host = services.host_add(
        user=admin, name="h1", uri=" qemu+ssh://root@h1/system ", cluster_id=cluster.pk
    )
    assert (host.uri, host.status) == ("qemu+ssh://root@h1/system", HostStatus.CONNECTING)
    assert Event.objects.get().host == host
    refusals = [
        ("", "qemu:///system", "Host name is required"),
        ("bad name", "qemu:///system", "Host name is required"),
        ("h2", "not a uri", "Give a libvirt URI"),
        ("h1", "qemu:///system", "already exists"),
        ("h3", "qemu+ssh://root@h1/system", "already exists"),
    ]
    for name, uri, message in refusals:
        with pytest.raises(ActionRefused, match=message):
            services.host_add(user=admin, name=name, uri=uri, cluster_id=cluster.pk)
    with pytest.raises(ActionRefused, match="That cluster does not exist"):
        services.host_add(user=admin, name="h4", uri="qemu:///system", cluster_id=cluster.pk + 1000)
    assert Host.objects.count() == 1
