"""Helpers shared by the modules split out of test_snapshot_jobs.py."""

import xml.etree.ElementTree as ET

import hypervisor
from portal.kernel.models import Event, Job, JobStatus, Phase, Severity
from storage.models import Disk
from vms import snapshots as services
from vms.choices import SnapshotStatus
from vms.models import Snapshot, SnapshotDisk, VirtualMachine


def conn_of(vm) -> hypervisor.Connection:
    return hypervisor.connect(vm.host.uri)


def disk_of(vm, target="vda") -> Disk:
    return Disk.objects.select_related("storage_domain").get(vm=vm, target=target)


def pool_of(vm) -> str:
    return disk_of(vm).storage_domain.pool_name


def chain(vm, target="vda") -> list[str]:
    disk = disk_of(vm, target)
    return conn_of(vm).volume_chain(disk.storage_domain.pool_name, disk.volume_name)


def pool_volumes(vm) -> set[str]:
    return {v.name for v in conn_of(vm).list_volumes(pool_of(vm))}


def domain_disks(vm) -> dict[str, str]:
    """target -> volume name of the domain's persistent definition (the emulation keeps a
    running test domain's current disks there)."""
    dom = conn_of(vm)._conn.lookupByUUIDString(str(vm.uuid))
    xml = dom.XMLDesc(2)  # VIR_DOMAIN_XML_INACTIVE
    return {
        d.find("target").get("dev"): d.find("source").get("file").rsplit("/", 1)[-1]
        for d in ET.fromstring(xml).findall("devices/disk")
        if d.get("device", "disk") == "disk"  # not the CD-ROM drive
    }


def frozen(snapshot, target="vda") -> str:
    return SnapshotDisk.objects.get(snapshot=snapshot, disk__target=target).volume_name


def status(vm) -> str:
    return VirtualMachine.objects.get(pk=vm.pk).status


def snap_status(snapshot) -> str:
    return Snapshot.objects.get(pk=snapshot.pk).status


def phases(job) -> list[str]:
    return list(Event.objects.filter(job=job).order_by("id").values_list("phase", flat=True))


def succeeded(job) -> Event:
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.SUCCEEDED, ""), job.error
    assert phases(job) == [Phase.REQUESTED, Phase.STARTED, Phase.SUCCEEDED]
    return Event.objects.get(job=job, phase=Phase.SUCCEEDED)


def failed(job, error="boom") -> Event:
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, error)
    event = Event.objects.get(job=job, phase=Phase.FAILED)
    assert (event.error, event.severity, event.action) == (error, Severity.ERROR, "snapshot")
    return event


def last_job(vm, kind=None) -> Job:
    jobs = Job.objects.filter(vm=vm)
    if kind:
        jobs = jobs.filter(kind=kind)
    return jobs.order_by("-pk").first()


def spy(monkeypatch, name, seen, observe=None):
    """Wrap Connection.`name`: record each call's arguments (and what `observe()` says then)."""
    original = getattr(hypervisor.Connection, name)

    def wrapper(self, *args, **kwargs):
        seen.append((args, kwargs, observe() if observe else None))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(hypervisor.Connection, name, wrapper)


def boom(monkeypatch, name):
    def fail(self, *args, **kwargs):
        raise hypervisor.HypervisorError("boom")

    monkeypatch.setattr(hypervisor.Connection, name, fail)


def take(work, admin, vm, description="", disks=None, memory=False) -> Snapshot:
    ids = disks if disks is not None else list(vm.disks.values_list("pk", flat=True))
    snapshot = work(
        lambda: services.snapshot_create(
            vm_id=vm.pk, user=admin, description=description, disk_ids=ids, save_memory=memory
        )
    )
    succeeded(last_job(vm, "snapshot_create"))
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.OK
    return snapshot
