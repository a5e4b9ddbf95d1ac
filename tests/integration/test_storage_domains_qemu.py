"""Storage domains through Vireo (services, RQ jobs, the worker) on the real private libvirtd:
a Local on Host domain end to end (pool defined, active and autostarted, a VM's disk volume
made in it), Remove keeping or formatting the data, a path that is missing or read-only on one
host, and NFS against a real export where this machine's kernel can serve one.

Every pool a test makes is undefined afterwards, pass or fail; directories are the tests'
own temporary ones."""

import subprocess
from pathlib import Path

import libvirt
import pytest
from factories import ClusterFactory, HostFactory
from helpers import MiB

import hypervisor
from hypervisor.domainxml import pool_xml
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Job, JobStatus
from storage.choices import PoolStatus, StorageDomainStatus, StorageType
from storage.models import StorageDomain, StorageDomainHost
from vms import domains
from vms.choices import HostStatus
from vms.domain_jobs import pool_spec
from vms.services import vm_create, vm_remove

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
SD = StorageDomainStatus


@pytest.fixture
def real_host(libvirt_uri, conn):
    """A data center whose one host is the private libvirtd; afterwards every pool named by a
    storage domain of the test is undefined there (its files stay: the tests' tmp dirs)."""
    cluster = ClusterFactory()
    host = HostFactory(cluster=cluster, uri=libvirt_uri, status=HostStatus.UP, name="qemu1")
    made: set[str] = set()
    yield host, made
    made |= set(StorageDomain.objects.values_list("pool_name", flat=True))
    for name in made:
        try:
            conn.pool_remove(name, wipe=False, delete_target=False)
        except hypervisor.HypervisorError:
            pass


def create(user, host, path, **fields) -> StorageDomain:
    values = {
        "user": user,
        "name": "local-it",
        "data_center_id": host.cluster.data_center_id,
        "domain_function": "data",
        "storage_type": StorageType.LOCAL,
        "path": str(path),
    }
    return domains.storage_domain_create(**(values | fields))


def raw_pool(uri: str, name: str) -> libvirt.virStoragePool:
    return libvirt.open(uri).storagePoolLookupByName(name)


def test_local_domain_end_to_end(admin, real_host, libvirt_uri, conn, tmp_path, work, prefix):
    host, made = real_host
    directory = tmp_path / "local"
    directory.mkdir()
    domain = work(lambda: create(admin, host, directory))
    made.add(domain.pool_name)
    domain.refresh_from_db()
    assert domain.status == SD.ACTIVE, Job.objects.get().error
    pool = raw_pool(libvirt_uri, domain.pool_name)
    assert pool.isActive() and pool.autostart() == 1
    assert conn.get_pool(domain.pool_name).path == str(directory)
    row = StorageDomainHost.objects.get(domain=domain, host=host)
    assert row.status == PoolStatus.ACTIVE and row.total_bytes > 0 and row.free_bytes > 0
    assert domain.total_bytes == row.total_bytes  # one host: its figures

    # A VM's disk is a volume in it.
    vm = work(
        lambda: vm_create(
            user=admin,
            name=f"{prefix}-vm",
            cluster_id=host.cluster_id,
            memory_mb=64,
            vcpus=1,
            disk_bytes=64 * MiB,
            storage_domain_id=domain.pk,
        )
    )
    disk = vm.disks.get()
    assert (directory / disk.volume_name).is_file()

    # Remove is refused while the VM's disk lives on it.
    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    assert not raw_pool(libvirt_uri, domain.pool_name).isActive()
    with pytest.raises(ActionRefused, match="1 disk\\(s\\) are stored on it"):
        domains.storage_domain_remove(domain_id=domain.pk, user=admin)
    work(lambda: domains.storage_domain_activate(domain_id=domain.pk, user=admin))
    work(lambda: vm_remove(vm_id=vm.pk, user=admin, remove_disks=True))
    assert not (directory / disk.volume_name).exists()

    # Remove keeping the data: the pool goes, the files stay.
    conn.create_volume(domain.pool_name, "kept.img", MiB, preallocate=True)
    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    work(lambda: domains.storage_domain_remove(domain_id=domain.pk, user=admin))
    assert not StorageDomain.objects.filter(pk=domain.pk).exists()
    with pytest.raises(hypervisor.PoolNotFound):
        conn.get_pool(domain.pool_name)
    assert (directory / "kept.img").is_file()
    assert not Job.objects.filter(status=JobStatus.FAILED).exists()


def test_remove_with_format_domain_deletes_the_volumes(admin, real_host, conn, tmp_path, work):
    host, made = real_host
    directory = tmp_path / "wipe"
    directory.mkdir()
    domain = work(lambda: create(admin, host, directory, name="wipe-it"))
    made.add(domain.pool_name)
    conn.create_volume(domain.pool_name, "gone.img", MiB, preallocate=True)
    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    work(lambda: domains.storage_domain_remove(domain_id=domain.pk, user=admin, format_domain=True))
    assert not StorageDomain.objects.filter(pk=domain.pk).exists()
    with pytest.raises(hypervisor.PoolNotFound):
        conn.get_pool(domain.pool_name)
    assert directory.is_dir() and list(directory.iterdir()) == []  # the directory is the admin's


@pytest.fixture
def test_host(real_host, sync_hosts):
    """A second host of the same data center, on libvirt's test driver (any path works there)."""
    host, _ = real_host
    other = HostFactory(cluster=host.cluster, name="testhost1")
    sync_hosts(other)
    return other


def test_missing_path_leaves_the_domain_inactive_on_that_host_only(
    admin, real_host, test_host, tmp_path, work
):
    host, made = real_host
    missing = tmp_path / "not-there"
    domain = work(lambda: create(admin, host, missing))
    made.add(domain.pool_name)
    domain.refresh_from_db()
    assert domain.status == SD.ACTIVE  # it works on the other host
    row = StorageDomainHost.objects.get(domain=domain, host=host)
    assert row.status == PoolStatus.INACTIVE and row.setup_failed
    assert row.error == f"cannot open directory '{missing}': No such file or directory"
    assert StorageDomainHost.objects.get(domain=domain, host=test_host).status == PoolStatus.ACTIVE
    assert not missing.exists()  # Vireo never makes an administrator's directory

    # Once the directory exists, Activate tries again on that host.
    missing.mkdir()
    work(lambda: domains.storage_domain_activate(domain_id=domain.pk, user=admin))
    row.refresh_from_db()
    assert (row.status, row.error, row.setup_failed) == (PoolStatus.ACTIVE, "", False)


def test_read_only_path_leaves_the_domain_inactive_there(
    admin, real_host, test_host, tmp_path, work
):
    host, made = real_host
    directory = tmp_path / "read-only"
    directory.mkdir()
    # Root writes anywhere; an immutable directory is one it cannot write in.
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported on this file system: no read-only directory")
    try:
        domain = work(lambda: create(admin, host, directory))
        made.add(domain.pool_name)
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    row = StorageDomainHost.objects.get(domain__name="local-it", host=host)
    assert row.status == PoolStatus.INACTIVE
    assert "Operation not permitted" in row.error, row.error
    assert StorageDomain.objects.get(name="local-it").status == SD.ACTIVE


def test_a_path_no_host_can_use_changes_nothing(admin, real_host, conn, tmp_path, work):
    host, _ = real_host
    domain = work(lambda: create(admin, host, tmp_path / "nowhere"))
    job = Job.objects.get()
    assert job.status == JobStatus.FAILED
    assert job.error == (
        "Storage domain local-it could not be set up on any host. qemu1: cannot open directory "
        f"'{tmp_path / 'nowhere'}': No such file or directory"
    )
    assert not StorageDomain.objects.exists()
    with pytest.raises(hypervisor.PoolNotFound):
        conn.get_pool(domain.pool_name)  # the definition it made is gone again


# ---- NFS --------------------------------------------------------------------------------------


def _nfs_unavailable() -> str:
    """Why this machine cannot serve and mount an NFS export for the test, or ""."""
    filesystems = Path("/proc/filesystems").read_text().split()
    missing = [fs for fs in ("nfsd", "nfs") if fs not in filesystems]
    if missing:
        return (
            f"the kernel ({Path('/proc/sys/kernel/osrelease').read_text().strip()}) has no "
            f"{' and no '.join(missing)} file system (not in /proc/filesystems, and no "
            "/lib/modules to load one): nfs-kernel-server cannot run and an export cannot be "
            "mounted in this container"
        )
    for binary in ("exportfs", "rpc.nfsd", "rpcbind"):
        if subprocess.run(["which", binary], capture_output=True).returncode:
            return f"{binary} is not installed (nfs-kernel-server, Makefile's DEB_PACKAGES)"
    return ""


@pytest.fixture
def nfs_export(tmp_path):
    """A directory exported read-write on 127.0.0.1 by the kernel NFS server."""
    why = _nfs_unavailable()
    if why:
        pytest.skip(f"No real NFS export: {why}.")
    export = tmp_path / "export"
    export.mkdir()
    steps = [
        ["rpcbind"],
        ["sh", "-c", "mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd"],
        ["rpc.nfsd", "4"],
        ["rpc.mountd"],
        ["exportfs", "-o", "rw,no_root_squash,insecure,sync", f"127.0.0.1:{export}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode and step[0] in ("sh", "exportfs"):
            pytest.skip(f"No real NFS export: {' '.join(step)} failed: {done.stderr.strip()}")
    yield export
    subprocess.run(["exportfs", "-u", f"127.0.0.1:{export}"], capture_output=True)


def test_nfs_domain_on_a_real_export(admin, real_host, libvirt_uri, conn, nfs_export, work):
    host, made = real_host
    domain = work(
        lambda: create(
            admin,
            host,
            nfs_export,
            name="nfs-it",
            storage_type=StorageType.NFS,
            nfs_server="127.0.0.1",
        )
    )
    made.add(domain.pool_name)
    domain.refresh_from_db()
    assert domain.status == SD.ACTIVE, Job.objects.get().error
    pool = raw_pool(libvirt_uri, domain.pool_name)
    assert pool.isActive() and pool.autostart() == 1
    conn.create_volume(domain.pool_name, "on-nfs.img", MiB, preallocate=True)
    assert (nfs_export / "on-nfs.img").is_file()  # written through the mount, on the export
    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    work(lambda: domains.storage_domain_remove(domain_id=domain.pk, user=admin, format_domain=True))
    assert not (nfs_export / "on-nfs.img").exists()
    assert not Path(domain.target_path).exists()  # the mount point Vireo built is gone


def test_an_nfs_domain_that_cannot_be_mounted_changes_nothing(admin, real_host, conn, work):
    """An NFS server that does not answer (or, on a kernel without NFS, a mount that cannot be
    made at all): the job fails with the host's own message and leaves no pool behind."""
    host, _ = real_host
    if not _nfs_unavailable():
        pytest.skip("this kernel can mount NFS: 192.0.2.1 would only time out after minutes")
    domain = work(
        lambda: create(
            admin,
            host,
            "/exports/none",
            name="nfs-none",
            storage_type=StorageType.NFS,
            nfs_server="192.0.2.1",
        )
    )
    job = Job.objects.get()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("Storage domain nfs-none could not be set up on any host. qemu1: ")
    assert "mount" in job.error
    assert not StorageDomain.objects.exists()
    with pytest.raises(hypervisor.PoolNotFound):
        conn.get_pool(domain.pool_name)


def test_the_real_libvirtd_keeps_the_nfs_mount_options(libvirt_uri, settings):
    """The netfs pool Vireo defines carries the mount options that make a silent NFS server
    fail the mount in seconds (soft, timeo, retrans, retry=0): libvirt keeps them, so the
    host's mount gets them. The pool is only defined (never started) and undefined after."""
    domain = StorageDomain(
        name="nfs-opts", nfs_server="192.0.2.1", path="/exports/x", pool_name="vireo-opts-it"
    )
    domain.storage_type = StorageType.NFS
    raw = libvirt.open(libvirt_uri)
    pool = raw.storagePoolDefineXML(pool_xml(pool_spec(domain)))
    try:
        xml = pool.XMLDesc()
    finally:
        pool.undefine()
    options = [opt.split("'")[0] for opt in xml.split("<fs:option name='")[1:]]
    assert options == list(settings.VIREO_NFS_MOUNT_OPTIONS)
    assert "retry=0" in options and "soft" in options
