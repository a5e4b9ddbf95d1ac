"""VM and disk jobs end to end: service -> on-commit enqueue -> real RQ worker -> libvirt's
test driver, and back to a real status in the inventory whatever happens."""

import xml.etree.ElementTree as ET

import pytest
from factories import DiskFactory, HostFactory, StorageDomainFactory

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase, Severity
from storage.choices import DiskStatus
from storage.models import Disk
from vms import disks as disk_services
from vms import jobs as vm_jobs
from vms import services
from vms.choices import VMStatus
from vms.models import Cluster, Host, VirtualMachine

GiB = 1024**3


def conn_of(vm_or_host) -> hypervisor.Connection:
    host = getattr(vm_or_host, "host", vm_or_host)
    return hypervisor.connect(host.uri)


def domain(vm) -> hypervisor.DomainInfo:
    return conn_of(vm).get_domain(str(vm.uuid))


def domain_disks(vm) -> dict[str, str]:
    """target -> source file of the domain's disks, as libvirt holds them."""
    xml = conn_of(vm)._conn.lookupByUUIDString(str(vm.uuid)).XMLDesc(0)
    return {
        d.find("target").get("dev"): d.find("source").get("file")
        for d in ET.fromstring(xml).findall("devices/disk")
        if d.get("device", "disk") == "disk"
    }


def volumes(host, pool) -> dict[str, hypervisor.VolumeInfo]:
    return {v.name: v for v in conn_of(host).list_volumes(pool)}


def phases(job) -> list[str]:
    return list(Event.objects.filter(job=job).order_by("id").values_list("phase", flat=True))


def assert_succeeded(job):
    job.refresh_from_db()
    assert (job.status, job.error, job.progress) == (JobStatus.SUCCEEDED, "", 100)
    assert job.ended_at is not None
    assert phases(job) == [Phase.REQUESTED, Phase.STARTED, Phase.SUCCEEDED]
    return Event.objects.get(job=job, phase=Phase.SUCCEEDED)


def assert_failed(job, error):
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == error
    failed = Event.objects.get(job=job, phase=Phase.FAILED)
    assert failed.error == error
    assert failed.severity == Severity.ERROR
    return failed


# -- run ---------------------------------------------------------------------------------------


def test_run_from_down(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN)
    job = work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP and vm.started_at is not None
    assert domain(vm).state == hypervisor.DomainState.RUNNING
    event = assert_succeeded(job)
    assert event.message == f"VM {vm.name} was started on host {vm.host.name}."


def test_run_defines_a_vm_the_host_does_not_know(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN)
    conn_of(vm).undefine_domain(str(vm.uuid))
    job = work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    assert_succeeded(job)
    assert domain(vm).state == hypervisor.DomainState.RUNNING
    assert set(domain_disks(vm)) == {"vda"}


def test_run_from_suspended_restores(admin, make_vm, work):
    vm = make_vm(VMStatus.SUSPENDED)
    assert domain(vm).has_managed_save
    job = work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP
    info = domain(vm)
    assert (info.state, info.has_managed_save) == (hypervisor.DomainState.RUNNING, False)
    event = assert_succeeded(job)
    assert event.message == (
        f"VM {vm.name} was restored from its saved state on host {vm.host.name}."
    )
    assert Job.objects.get(pk=job.pk).step == "Restoring state"


def test_run_from_paused_resumes(admin, make_vm, work):
    vm = make_vm(VMStatus.PAUSED)
    job = work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP
    assert domain(vm).state == hypervisor.DomainState.RUNNING
    assert assert_succeeded(job).message.startswith(f"VM {vm.name} was started")
    assert Job.objects.get(pk=job.pk).step == "Resuming"


# -- shutdown --------------------------------------------------------------------------------


def test_shutdown_with_reason_then_power_on(admin, make_vm, work):
    vm = make_vm(VMStatus.UP)
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_reason_enabled=True)
    job = work(lambda: services.vm_shutdown(vm_id=vm.pk, user=admin, reason="patching"))
    vm.refresh_from_db()
    assert (vm.status, vm.shutdown_reason, vm.started_at) == (VMStatus.DOWN, "patching", None)
    assert domain(vm).state == hypervisor.DomainState.SHUTOFF
    event = assert_succeeded(job)
    assert event.message == f"VM {vm.name} was shut down. Reason: patching"
    assert event.reason == "patching"
    assert Event.objects.get(job=job, phase=Phase.REQUESTED).reason == "patching"

    run = work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    event = assert_succeeded(run)
    assert event.message.endswith("It had been shut down with the reason: patching")
    assert event.reason == "patching"


def test_shutdown_without_reason_clears_an_old_one(admin, make_vm, work):
    vm = make_vm(VMStatus.UP, shutdown_reason="an old reason")
    job = work(lambda: services.vm_shutdown(vm_id=vm.pk, user=admin, reason="ignored"))
    vm.refresh_from_db()
    assert (vm.status, vm.shutdown_reason) == (VMStatus.DOWN, "")
    assert assert_succeeded(job).message == f"VM {vm.name} was shut down."
    run = work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    assert "reason" not in assert_succeeded(run).message


def test_power_on_after_power_off_does_not_repeat_an_old_reason(admin, make_vm, work):
    """The reason belongs to the shutdown it was given for, not to every later power on."""
    vm = make_vm(VMStatus.UP)
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_reason_enabled=True)
    work(lambda: services.vm_shutdown(vm_id=vm.pk, user=admin, reason="patching"))
    work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    work(lambda: services.vm_poweroff(vm_id=vm.pk, user=admin))
    run = work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    event = assert_succeeded(run)
    assert "patching" not in event.message
    assert event.reason == ""


def test_shutdown_timeout_leaves_the_vm_up(admin, make_vm, work, monkeypatch):
    vm = make_vm(VMStatus.UP)
    Cluster.objects.filter(pk=vm.cluster_id).update(shutdown_timeout=1)
    monkeypatch.setattr(conn_of(vm), "shutdown", lambda uuid: None)  # the guest ignores ACPI
    job = work(lambda: services.vm_shutdown(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP
    assert vm.started_at is not None
    assert domain(vm).state == hypervisor.DomainState.RUNNING
    message = (
        f"{vm.name} did not shut down within 1 seconds and is still running. "
        "Use Power Off to force it."
    )
    failed = assert_failed(job, message)
    assert failed.message == f"Failed to shut down VM {vm.name}."
    assert phases(job) == [Phase.REQUESTED, Phase.STARTED, Phase.FAILED]


# -- power off, suspend, reboot ----------------------------------------------------------------


def test_poweroff(admin, make_vm, work):
    vm = make_vm(VMStatus.UP)
    job = work(lambda: services.vm_poweroff(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert (vm.status, vm.started_at) == (VMStatus.DOWN, None)
    assert domain(vm).state == hypervisor.DomainState.SHUTOFF
    assert assert_succeeded(job).message == f"VM {vm.name} was powered off."


def test_poweroff_of_a_vm_already_off_on_the_host_succeeds(admin, make_vm, work):
    vm = make_vm(VMStatus.UP)
    conn_of(vm).destroy(str(vm.uuid))  # the guest went down meanwhile
    job = work(lambda: services.vm_poweroff(vm_id=vm.pk, user=admin))
    assert_succeeded(job)
    vm.refresh_from_db()
    assert vm.status == VMStatus.DOWN


def test_suspend(admin, make_vm, work):
    vm = make_vm(VMStatus.UP)
    job = work(lambda: services.vm_suspend(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert (vm.status, vm.started_at) == (VMStatus.SUSPENDED, None)
    info = domain(vm)
    assert (info.state, info.has_managed_save) == (hypervisor.DomainState.SHUTOFF, True)
    assert assert_succeeded(job).message == f"VM {vm.name} was suspended (hibernated)."


def test_reboot(admin, make_vm, work):
    vm = make_vm(VMStatus.UP)
    job = work(lambda: services.vm_reboot(vm_id=vm.pk, user=admin))
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP and vm.started_at is not None
    assert domain(vm).state == hypervisor.DomainState.RUNNING
    assert assert_succeeded(job).message == f"VM {vm.name} was rebooted."


@pytest.mark.parametrize(
    ("service", "status", "ends"),
    [
        (services.vm_shutdown, VMStatus.PAUSED, VMStatus.DOWN),
        (services.vm_shutdown, VMStatus.REBOOT_IN_PROGRESS, VMStatus.DOWN),
        (services.vm_poweroff, VMStatus.PAUSED, VMStatus.DOWN),
        (services.vm_poweroff, VMStatus.POWERING_UP, VMStatus.DOWN),
        (services.vm_poweroff, VMStatus.POWERING_DOWN, VMStatus.DOWN),
        (services.vm_poweroff, VMStatus.REBOOT_IN_PROGRESS, VMStatus.DOWN),
        (services.vm_poweroff, VMStatus.NOT_RESPONDING, VMStatus.DOWN),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_stopping_from_every_status_the_table_allows(admin, make_vm, work, service, status, ends):
    vm = make_vm(status)  # the host runs (or holds paused) the domain
    job = work(lambda: service(vm_id=vm.pk, user=admin))
    assert_succeeded(job)
    vm.refresh_from_db()
    assert (vm.status, vm.started_at) == (ends, None)
    assert domain(vm).state == hypervisor.DomainState.SHUTOFF


# -- remove ------------------------------------------------------------------------------------


def test_remove_with_disks(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN, disks=2)
    keep = make_vm(VMStatus.DOWN, host=vm.host)
    pool = vm.disks.first().storage_domain.pool_name
    assert len(volumes(vm.host, pool)) == 3
    job = work(lambda: services.vm_remove(vm_id=vm.pk, user=admin, remove_disks=True))
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert list(Disk.objects.values_list("vm", flat=True)) == [keep.pk]
    assert set(volumes(vm.host, pool)) == {keep.disks.get().volume_name}
    with pytest.raises(hypervisor.DomainNotFound):
        domain(vm)
    event = assert_succeeded(job)
    assert event.message == f"VM {vm.name} was removed with its disks."
    assert (event.vm, event.object_name) == (None, vm.name)


def test_remove_keeping_disks_leaves_floating_disks(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN, disks=2)
    pool = vm.disks.first().storage_domain.pool_name
    job = work(lambda: services.vm_remove(vm_id=vm.pk, user=admin, remove_disks=False))
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    disks = list(Disk.objects.all())
    assert len(disks) == 2
    assert {(d.vm_id, d.status) for d in disks} == {(None, DiskStatus.OK)}
    assert set(volumes(vm.host, pool)) == {d.volume_name for d in disks}
    with pytest.raises(hypervisor.DomainNotFound):
        domain(vm)
    assert assert_succeeded(job).message.endswith("its disks are now floating disks.")


def test_remove_a_suspended_vm_drops_its_saved_state(admin, make_vm, work):
    vm = make_vm(VMStatus.DOWN)
    conn_of(vm).start(str(vm.uuid))
    conn_of(vm).managed_save(str(vm.uuid))
    job = work(lambda: services.vm_remove(vm_id=vm.pk, user=admin))
    assert_succeeded(job)
    assert str(vm.uuid) not in {d.uuid for d in conn_of(vm).list_domains()}


# -- clone ------------------------------------------------------------------------------------


def test_clone(admin, make_vm, work, monkeypatch):
    source = make_vm(VMStatus.DOWN, disks=2)
    pool = source.disks.first().storage_domain.pool_name
    seen: list[int] = []
    real_progress = vm_jobs.job_progress

    def record(job, percent, step=""):
        seen.append(percent)
        real_progress(job, percent, step)

    monkeypatch.setattr(vm_jobs, "job_progress", record)
    clone = work(lambda: services.vm_clone(vm_id=source.pk, user=admin, clone_name="copy"))
    clone.refresh_from_db()
    source.refresh_from_db()
    assert (clone.status, source.status) == (VMStatus.DOWN, VMStatus.DOWN)
    assert (clone.memory_mb, clone.vcpus, clone.host) == (
        source.memory_mb,
        source.vcpus,
        source.host,
    )
    copies = {d.target: d for d in clone.disks.all()}
    originals = {d.target: d for d in source.disks.all()}
    assert set(copies) == set(originals) == {"vda", "vdb"}
    on_host = volumes(source.host, pool)
    for target, copy in copies.items():
        assert copy.status == DiskStatus.OK
        assert copy.volume_name != originals[target].volume_name
        assert copy.volume_name.startswith(str(clone.uuid))
        assert on_host[copy.volume_name].capacity == originals[target].size_bytes
        assert copy.size_bytes == originals[target].size_bytes
    assert len(on_host) == 4
    assert domain(clone).state == hypervisor.DomainState.SHUTOFF
    assert domain(clone).name == "copy"
    assert set(domain_disks(clone)) == {"vda", "vdb"}
    assert all(str(clone.uuid) in path for path in domain_disks(clone).values())
    job = Job.objects.get(kind="vm_clone")
    assert (job.vm_id, job.result_vm_id) == (source.pk, clone.pk)
    assert seen == sorted(seen) and seen[0] == 5 and 90 in seen and seen[-1] == 95
    event = assert_succeeded(job)
    assert event.message == f"VM {source.name} was cloned to copy."
    assert event.vm == clone


def test_clone_failure_takes_the_clone_away(admin, make_vm, work):
    source = make_vm(VMStatus.DOWN)
    disk = source.disks.get()
    conn_of(source).delete_volume(disk.storage_domain.pool_name, disk.volume_name)
    work(lambda: services.vm_clone(vm_id=source.pk, user=admin, clone_name="copy"))
    assert not VirtualMachine.objects.filter(name="copy").exists()
    assert list(Disk.objects.all()) == [disk]
    source.refresh_from_db()
    assert source.status == VMStatus.DOWN
    job = Job.objects.get(kind="vm_clone")
    failed = assert_failed(job, job.error)
    assert "Storage volume not found" in job.error
    assert failed.message == f"Failed to clone VM {source.name}."
    assert volumes(source.host, disk.storage_domain.pool_name) == {}


# -- create ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [True, False])
def test_create(admin, work, sync_hosts, sparse):
    host = HostFactory()
    storage = StorageDomainFactory(data_center=host.cluster.data_center)
    sync_hosts(host)
    vm = work(
        lambda: services.vm_create(
            user=admin,
            name="fresh",
            cluster_id=host.cluster_id,
            memory_mb=512,
            vcpus=2,
            disk_bytes=3 * GiB,
            storage_domain_id=storage.pk,
            sparse=sparse,
        )
    )
    vm.refresh_from_db()
    assert (vm.status, vm.host) == (VMStatus.DOWN, host)
    disk = vm.disks.get()
    assert disk.status == DiskStatus.OK
    volume = conn_of(host).get_volume(storage.pool_name, disk.volume_name)
    assert volume.capacity == 3 * GiB
    if sparse:
        assert (volume.format, volume.allocation) == ("qcow2", 0)
    else:
        assert (volume.format, volume.allocation) == ("raw", 3 * GiB)
    assert disk.actual_bytes == volume.allocation
    info = domain(vm)
    assert (info.state, info.memory_mb, info.vcpus, info.name) == (
        hypervisor.DomainState.SHUTOFF,
        512,
        2,
        "fresh",
    )
    assert set(domain_disks(vm)) == {"vda"}
    event = assert_succeeded(Job.objects.get(kind="vm_create"))
    assert event.message == f"VM fresh was created on host {host.name}."


def test_create_failure_takes_the_vm_away(admin, work, sync_hosts):
    host = HostFactory()
    sync_hosts(host)
    # A storage domain whose pool the host does not have.
    storage = StorageDomainFactory(data_center=host.cluster.data_center)
    work(
        lambda: services.vm_create(
            user=admin,
            name="fresh",
            cluster_id=host.cluster_id,
            memory_mb=512,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=storage.pk,
        )
    )
    assert not VirtualMachine.objects.exists() and not Disk.objects.exists()
    job = Job.objects.get(kind="vm_create")
    failed = assert_failed(job, job.error)
    assert "Storage pool not found" in job.error
    assert (failed.object_name, failed.host, failed.message) == (
        "fresh",
        host,
        "Failed to create VM fresh.",
    )


# -- hypervisor failures ----------------------------------------------------------------------


def test_domain_undefined_behind_our_back(admin, make_vm, work):
    vm = make_vm(VMStatus.UP)
    conn = conn_of(vm)
    conn.destroy(str(vm.uuid))
    conn.undefine_domain(str(vm.uuid))
    job = work(lambda: services.vm_suspend(vm_id=vm.pk, user=admin))
    job.refresh_from_db()
    assert job.error.startswith("Domain not found")
    failed = assert_failed(job, job.error)
    assert failed.message == f"Failed to suspend VM {vm.name}."
    vm.refresh_from_db()
    assert vm.status == VMStatus.DOWN  # what the host says: it does not know the VM


def test_hypervisor_refusal_returns_the_vm_to_its_real_status(admin, make_vm, work):
    """The portal thinks the VM is Paused, the host has it running: resume fails with
    libvirt's message and the VM shows Up, as the host reports."""
    vm = make_vm(VMStatus.PAUSED)
    conn_of(vm).resume(str(vm.uuid))
    job = work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    job.refresh_from_db()
    assert "not paused" in job.error
    assert_failed(job, job.error)
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP


def test_host_that_cannot_be_opened(admin, make_vm, work, tmp_path):
    vm = make_vm(VMStatus.DOWN)
    Host.objects.filter(pk=vm.host_id).update(uri=f"test://{tmp_path}/missing-node.xml")
    job = work(lambda: services.vm_run(vm_id=vm.pk, user=admin))
    job.refresh_from_db()
    assert "missing-node.xml" in job.error
    failed = assert_failed(job, job.error)
    assert failed.message == f"Failed to run VM {vm.name}."
    vm.refresh_from_db()
    assert vm.status == VMStatus.UNKNOWN  # the host cannot be asked; never left busy


def test_remove_on_an_unreachable_host_unlocks_the_disks(admin, make_vm, work, tmp_path):
    vm = make_vm(VMStatus.DOWN)
    Host.objects.filter(pk=vm.host_id).update(uri=f"test://{tmp_path}/missing-node.xml")
    job = work(lambda: services.vm_remove(vm_id=vm.pk, user=admin))
    job.refresh_from_db()
    assert_failed(job, job.error)
    vm.refresh_from_db()
    assert vm.status == VMStatus.UNKNOWN
    assert vm.disks.get().status == DiskStatus.OK


# -- disks -----------------------------------------------------------------------------------


def floating_disk(vm, sync_hosts, **fields) -> Disk:
    """A floating disk on vm's host, with its volume on the host."""
    disk = DiskFactory(
        vm=None,
        host=vm.host,
        storage_domain=vm.disks.first().storage_domain,
        alias="spare_Disk1",
        volume_name="spare.qcow2",
        **fields,
    )
    sync_hosts(vm.host)
    return disk


def test_disk_attach(admin, make_vm, work, sync_hosts):
    vm = make_vm(VMStatus.DOWN)
    disk = floating_disk(vm, sync_hosts)
    job = work(lambda: disk_services.disk_attach(disk_id=disk.pk, vm_id=vm.pk, user=admin))
    disk.refresh_from_db()
    assert (disk.vm, disk.target, disk.status) == (vm, "vdb", DiskStatus.OK)
    disks = domain_disks(vm)
    assert set(disks) == {"vda", "vdb"}
    assert disks["vdb"].endswith("/spare.qcow2")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert phases(job) == [Phase.REQUESTED, Phase.SUCCEEDED]


def test_disk_attach_failure_unlocks_the_disk(admin, make_vm, work, sync_hosts):
    vm = make_vm(VMStatus.DOWN)
    disk = floating_disk(vm, sync_hosts)
    conn_of(vm).delete_volume(disk.storage_domain.pool_name, disk.volume_name)
    job = work(lambda: disk_services.disk_attach(disk_id=disk.pk, vm_id=vm.pk, user=admin))
    job.refresh_from_db()
    assert "Storage volume not found" in job.error
    assert_failed(job, job.error)
    disk.refresh_from_db()
    assert (disk.vm, disk.status) == (None, DiskStatus.OK)
    assert set(domain_disks(vm)) == {"vda"}


def test_disk_remove(admin, make_vm, work, sync_hosts):
    vm = make_vm(VMStatus.DOWN)
    disk = floating_disk(vm, sync_hosts)
    pool = disk.storage_domain.pool_name
    assert "spare.qcow2" in volumes(vm.host, pool)
    job = work(lambda: disk_services.disk_remove(disk_id=disk.pk, user=admin))
    assert not Disk.objects.filter(pk=disk.pk).exists()
    assert "spare.qcow2" not in volumes(vm.host, pool)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert Event.objects.get(job=job, phase=Phase.SUCCEEDED).message == (
        "Disk spare_Disk1 was removed."
    )


def test_disk_refusals(admin, make_vm, sync_hosts):
    vm = make_vm(VMStatus.DOWN)
    attached = vm.disks.get()
    with pytest.raises(ActionRefused, match="is attached to a VM"):
        disk_services.disk_remove(disk_id=attached.pk, user=admin)
    with pytest.raises(ActionRefused, match="is attached to a VM"):
        disk_services.disk_attach(disk_id=attached.pk, vm_id=vm.pk, user=admin)
    spare = floating_disk(vm, sync_hosts)
    running = make_vm(VMStatus.UP, host=vm.host)
    with pytest.raises(ActionRefused) as exc:
        disk_services.disk_attach(disk_id=spare.pk, vm_id=running.pk, user=admin)
    assert str(exc.value) == (
        f"Disks can be attached only while the VM is Down; {running.name} is Up."
    )
    elsewhere = make_vm(VMStatus.DOWN, host=HostFactory(cluster=vm.cluster))
    with pytest.raises(ActionRefused, match=f"stored on host {vm.host.name}"):
        disk_services.disk_attach(disk_id=spare.pk, vm_id=elsewhere.pk, user=admin)
    foreign = make_vm(VMStatus.DOWN)  # another data center
    with pytest.raises(ActionRefused, match="in another data center"):
        disk_services.disk_attach(disk_id=spare.pk, vm_id=foreign.pk, user=admin)
    Disk.objects.filter(pk=spare.pk).update(status=DiskStatus.LOCKED)
    with pytest.raises(ActionRefused, match="spare_Disk1 is Locked"):
        disk_services.disk_remove(disk_id=spare.pk, user=admin)
    with pytest.raises(ActionRefused, match="does not exist any more"):
        disk_services.disk_remove(disk_id=spare.pk + 1000, user=admin)
    assert not Job.objects.exists() and not Event.objects.exists()
    spare.refresh_from_db()
    assert (spare.vm, spare.status) == (None, DiskStatus.LOCKED)
