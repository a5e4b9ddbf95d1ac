"""Storage domains on pools (vms/domains.py, vms/domain_jobs.py) against test-driver hosts:
New Domain on every Up host, a host that fails, Maintenance / Activate / Detach / Attach /
Remove, refusals that change nothing, and the monitor's per-host figures (no host overwrites
another's) and setting a domain up on a host that joins later."""

import threading

import pytest
from django.db import connections
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
from helpers import GiB
from monitor_support import host_status

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase
from storage.choices import PoolStatus, StorageDomainStatus, StorageType
from storage.models import StorageDomain, StorageDomainHost
from vms import domains
from vms.choices import HostStatus, VMStatus
from vms.models import VirtualMachine
from vms.services import vm_clone, vm_run

pytestmark = pytest.mark.django_db
SD = StorageDomainStatus


@pytest.fixture
def site(sync_hosts):
    """A data center with two Up test hosts in one cluster."""
    cluster = ClusterFactory()
    hosts = [HostFactory(cluster=cluster, name=f"h{n}") for n in (1, 2)]
    sync_hosts(*hosts)
    return cluster.data_center, hosts


def create(admin, dc, **fields):
    values = {
        "user": admin,
        "name": "local1",
        "data_center_id": dc.pk,
        "domain_function": "data",
        "storage_type": StorageType.LOCAL,
        "path": "/var/lib/vireo/local1",
    }
    return domains.storage_domain_create(**(values | fields))


def pool_on(host, domain):
    return hypervisor.connect(host.uri).get_pool(domain.pool_name)


def rows(domain) -> dict:
    return {
        r.host.name: (r.status, r.error)
        for r in StorageDomainHost.objects.filter(domain=domain).select_related("host")
    }


def messages(action: str) -> list[str]:
    return list(
        Event.objects.filter(action=action).order_by("id").values_list("message", flat=True)
    )


# -- New Domain -------------------------------------------------------------------------------


def test_new_local_domain_is_set_up_on_every_up_host(admin, site, work):
    dc, hosts = site
    down = HostFactory(cluster=hosts[0].cluster, name="h3", status=HostStatus.NON_RESPONSIVE)
    domain = work(lambda: create(admin, dc))
    domain.refresh_from_db()
    assert domain.pool_name.startswith("vireo-") and len(domain.pool_name) == 42
    assert (domain.status, domain.path, domain.target_path) == (
        SD.ACTIVE,
        "/var/lib/vireo/local1",
        "/var/lib/vireo/local1",
    )
    for host in hosts:
        pool = pool_on(host, domain)
        assert pool.active and pool.type == "dir" and pool.path == "/var/lib/vireo/local1"
    assert rows(domain) == {"h1": (PoolStatus.ACTIVE, ""), "h2": (PoolStatus.ACTIVE, "")}
    assert not StorageDomainHost.objects.filter(host=down).exists()
    # A local domain's space is the sum of its hosts' own pools.
    figures = StorageDomainHost.objects.filter(domain=domain).values_list("total_bytes", flat=True)
    assert domain.total_bytes == sum(figures) and domain.total_bytes > 0
    job = Job.objects.get()
    assert (job.kind, job.status, job.progress) == (
        "storage_domain_create",
        JobStatus.SUCCEEDED,
        100,
    )
    assert messages("add_storage_domain") == [
        f"{admin.username} asked to add storage domain local1 (Local on Host "
        f"/var/lib/vireo/local1) to data center {dc.name}.",
        f"Storage domain local1 was added to data center {dc.name}.",
    ]


def test_new_nfs_domain_mounts_the_export_on_each_host(admin, site, work, settings):
    dc, hosts = site
    domain = work(
        lambda: create(
            admin,
            dc,
            name="nfs1",
            storage_type=StorageType.NFS,
            nfs_server="NFS.Example.com",
            path="/exports/data/",
        )
    )
    domain.refresh_from_db()
    assert (domain.nfs_server, domain.path, domain.location) == (
        "nfs.example.com",
        "/exports/data",
        "nfs.example.com:/exports/data",
    )
    assert domain.target_path == f"{settings.VIREO_NFS_MOUNT_ROOT}/{domain.pool_name}"
    pool = pool_on(hosts[0], domain)
    assert (pool.type, pool.path, pool.active) == ("netfs", domain.target_path, True)
    # One shared export: the domain shows its pool's figures, not the sum over the hosts.
    assert domain.total_bytes == pool.capacity
    assert domain.status == SD.ACTIVE


def test_a_host_that_fails_leaves_the_domain_inactive_there_only(admin, site, work):
    dc, hosts = site
    broken = HostFactory(cluster=hosts[0].cluster, name="h0-gone", uri="test:///no/such/node.xml")
    domain = work(lambda: create(admin, dc))
    domain.refresh_from_db()
    assert domain.status == SD.ACTIVE
    status, error = rows(domain)["h0-gone"]
    assert status == PoolStatus.INACTIVE and "no/such/node.xml" in error
    assert StorageDomainHost.objects.get(domain=domain, host=broken).setup_failed
    assert rows(domain)["h1"] == (PoolStatus.ACTIVE, "")
    (done,) = Event.objects.filter(action="add_storage_domain", phase=Phase.SUCCEEDED)
    assert "It is Inactive on h0-gone: " in done.message


def test_no_host_able_to_set_it_up_changes_nothing(admin, work):
    cluster = ClusterFactory()
    HostFactory(cluster=cluster, name="only", uri="test:///no/such/node.xml")
    domain = work(lambda: create(admin, cluster.data_center))
    assert not StorageDomain.objects.filter(pk=domain.pk).exists()
    assert not StorageDomainHost.objects.exists()
    job = Job.objects.get()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("Storage domain local1 could not be set up on any host. only: ")
    failed = Event.objects.get(action="add_storage_domain", phase=Phase.FAILED)
    assert failed.message == "Failed to add storage domain local1."


BAD_LOCAL = [
    ("", "Path is required."),
    ("relative/dir", "Path must be an absolute path, starting with '/'."),
    ("/data/../etc", "Path may not contain '.' or '..' components."),
    ("/data//x", "Path may not contain '//'."),
    ("/data/my dir", "Path may contain only letters, digits"),
    ("/data/x\x00y", "Path may contain only letters, digits"),
    ("/data/$(reboot)", "Path may contain only letters, digits"),
    ("/data/<pool>", "Path may contain only letters, digits"),
    ("/", "Path / is a system directory"),
    ("/etc/vireo", "Path /etc/vireo is a system directory"),
    ("/tmp", "Path /tmp is a system directory"),
    ("/" + "a" * 1100, "Path is too long"),
]


@pytest.mark.parametrize("path,message", BAD_LOCAL)
def test_bad_local_paths_are_refused_and_change_nothing(admin, site, path, message):
    dc, _ = site
    with pytest.raises(ActionRefused) as refused:
        create(admin, dc, path=path)
    assert str(refused.value).startswith(message)
    assert not StorageDomain.objects.exists() and not Job.objects.exists()


@pytest.mark.parametrize(
    "server,export,message",
    [
        ("", "/exports", "NFS server is required."),
        ("bad host", "/exports", "NFS server must be a host name"),
        ("a..b", "/exports", "NFS server must be a host name"),
        ("-x.example.com", "/exports", "NFS server must be a host name"),
        ("nfs;reboot", "/exports", "NFS server must be a host name"),
        ("nfs.example.com", "exports", "Export Path must be an absolute path"),
        ("nfs.example.com", "/exports/../x", "Export Path may not contain '.' or '..'"),
    ],
)
def test_bad_nfs_input_is_refused(admin, site, server, export, message):
    dc, _ = site
    with pytest.raises(ActionRefused) as refused:
        create(admin, dc, storage_type=StorageType.NFS, nfs_server=server, path=export)
    assert str(refused.value).startswith(message)
    assert not StorageDomain.objects.exists()


def test_nfs_server_may_be_an_address(admin, site):
    dc, _ = site
    domain = create(admin, dc, storage_type=StorageType.NFS, nfs_server=" 127.0.0.1 ", path="/x")
    assert domain.nfs_server == "127.0.0.1"
    v6 = create(admin, dc, name="v6", storage_type=StorageType.NFS, nfs_server="::1", path="/x")
    assert v6.nfs_server == "::1"


def test_other_refusals_of_new_domain(admin, site):
    dc, hosts = site
    create(admin, dc)
    with pytest.raises(ActionRefused, match="Name 'local1' is already used by another storage"):
        create(admin, dc, path="/var/lib/vireo/other")
    with pytest.raises(ActionRefused, match="Storage domain local1 already uses /var/lib/vireo/"):
        create(admin, dc, name="again")
    with pytest.raises(ActionRefused, match="Name may contain only letters"):
        create(admin, dc, name="bad name")
    with pytest.raises(ActionRefused, match="That data center does not exist."):
        create(admin, dc, name="x", data_center_id=999_999)
    stranger = UserFactory()
    grant(stranger, "DataCenterAdmin", dc)  # everything under the data center but its storage
    with pytest.raises(ActionRefused, match="You may not create storage domains in data center"):
        create(stranger, dc, name="x", path="/srv/x")
    lonely = DataCenterFactory()
    ClusterFactory(data_center=lonely)
    with pytest.raises(ActionRefused, match="no host of data center .* is Up"):
        create(admin, lonely, name="x")
    assert StorageDomain.objects.count() == 1


def test_storage_admin_on_the_data_center_may_create(site):
    dc, _ = site
    storage_admin = UserFactory()
    grant(storage_admin, "StorageAdmin", dc)
    assert create(storage_admin, dc).status == SD.LOCKED


@pytest.mark.django_db(transaction=True)
def test_two_admins_creating_the_same_name_at_once(admin, site):
    dc, _ = site
    barrier = threading.Barrier(2)
    outcomes = []

    def attempt(n: int) -> None:
        try:
            barrier.wait()
            outcomes.append(create(admin, dc, path=f"/var/lib/vireo/race{n}"))
        except ActionRefused as exc:
            outcomes.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    made = [o for o in outcomes if isinstance(o, StorageDomain)]
    refused = [o for o in outcomes if isinstance(o, str)]
    assert len(made) == 1 and len(refused) == 1
    assert "Name 'local1' is" in refused[0]
    assert StorageDomain.objects.filter(name="local1").count() == 1


# -- Maintenance, Activate, Detach, Attach, Remove -----------------------------------------------


def test_the_whole_life_of_a_domain(admin, site, work, sync_hosts):
    dc, hosts = site
    domain = work(lambda: create(admin, dc))
    conn = hypervisor.connect(hosts[0].uri)
    conn.create_volume(domain.pool_name, "data.qcow2", GiB, preallocate=False)

    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    domain.refresh_from_db()
    assert domain.status == SD.MAINTENANCE
    assert not pool_on(hosts[0], domain).active and not pool_on(hosts[1], domain).active
    assert rows(domain) == {"h1": (PoolStatus.INACTIVE, ""), "h2": (PoolStatus.INACTIVE, "")}

    work(lambda: domains.storage_domain_activate(domain_id=domain.pk, user=admin))
    domain.refresh_from_db()
    assert domain.status == SD.ACTIVE and pool_on(hosts[1], domain).active

    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    work(lambda: domains.storage_domain_detach(domain_id=domain.pk, user=admin))
    domain.refresh_from_db()
    assert domain.status == SD.UNATTACHED and rows(domain) == {}
    with pytest.raises(hypervisor.PoolNotFound):
        pool_on(hosts[0], domain)

    other = ClusterFactory()
    target = HostFactory(cluster=other, name="t1")
    sync_hosts(target)
    work(
        lambda: domains.storage_domain_attach(
            domain_id=domain.pk, user=admin, data_center_id=other.data_center_id
        )
    )
    domain.refresh_from_db()
    assert (domain.status, domain.data_center_id) == (SD.ACTIVE, other.data_center_id)
    assert rows(domain) == {"t1": (PoolStatus.ACTIVE, "")}

    target_conn = hypervisor.connect(target.uri)
    target_conn.create_volume(domain.pool_name, "v.qcow2", GiB, preallocate=False)
    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    work(lambda: domains.storage_domain_remove(domain_id=domain.pk, user=admin, format_domain=True))
    assert not StorageDomain.objects.filter(pk=domain.pk).exists()
    with pytest.raises(hypervisor.PoolNotFound):
        pool_on(target, domain)
    assert Job.objects.filter(status=JobStatus.FAILED).count() == 0
    assert messages("remove_storage_domain")[-1] == (
        "Storage domain local1 was removed; its data was deleted."
    )


def test_status_table_refusals_change_nothing(admin, site, work):
    dc, _ = site
    domain = work(lambda: create(admin, dc))
    for service, words in (
        (domains.storage_domain_detach, "Cannot detach storage domain local1: it is Active."),
        (domains.storage_domain_attach, "Cannot attach storage domain local1: it is Active."),
    ):
        kwargs = {"data_center_id": dc.pk} if service is domains.storage_domain_attach else {}
        with pytest.raises(ActionRefused, match=words):
            service(domain_id=domain.pk, user=admin, **kwargs)
    with pytest.raises(ActionRefused, match="Cannot remove storage domain local1: it is Active."):
        domains.storage_domain_remove(domain_id=domain.pk, user=admin)
    StorageDomain.objects.filter(pk=domain.pk).update(status=SD.LOCKED)
    with pytest.raises(ActionRefused, match="it is Locked"):
        domains.storage_domain_maintenance(domain_id=domain.pk, user=admin)
    with pytest.raises(ActionRefused, match="it is Locked"):
        domains.storage_domain_edit(domain_id=domain.pk, user=admin, name="x")
    assert StorageDomain.objects.get(pk=domain.pk).status == SD.LOCKED
    assert Job.objects.count() == 1


def test_disks_stand_in_the_way(admin, site, work):
    dc, hosts = site
    domain = work(lambda: create(admin, dc))
    vm = VMFactory(host=hosts[0], status=VMStatus.UP, name="web1")
    DiskFactory(vm=vm, storage_domain=domain)
    with pytest.raises(ActionRefused, match="VM\\(s\\) web1 use its disks and are not Down"):
        domains.storage_domain_maintenance(domain_id=domain.pk, user=admin)
    StorageDomain.objects.filter(pk=domain.pk).update(status=SD.MAINTENANCE)
    for service in (domains.storage_domain_detach, domains.storage_domain_remove):
        with pytest.raises(ActionRefused, match="1 disk\\(s\\) are stored on it"):
            service(domain_id=domain.pk, user=admin)
    assert StorageDomain.objects.get(pk=domain.pk).status == SD.MAINTENANCE


def test_a_vm_on_a_domain_in_maintenance_neither_runs_nor_clones(admin, site, work):
    """Run and Clone VM name the domain in the way and change nothing; Activate lets them."""
    dc, hosts = site
    domain = work(lambda: create(admin, dc))
    vm = VMFactory(host=hosts[0], status=VMStatus.DOWN, name="web1", cluster=hosts[0].cluster)
    DiskFactory(vm=vm, storage_domain=domain, alias="web1_Disk1")
    StorageDomain.objects.filter(pk=domain.pk).update(status=SD.MAINTENANCE)
    why = "its disk web1_Disk1 is on storage domain local1, which is Maintenance"
    with pytest.raises(ActionRefused, match=f"Cannot run web1: {why}"):
        vm_run(vm_id=vm.pk, user=admin)
    with pytest.raises(ActionRefused, match=f"Cannot clone web1: {why}"):
        vm_clone(vm_id=vm.pk, user=admin, clone_name="web2")
    vm.refresh_from_db()
    assert vm.status == VMStatus.DOWN
    assert not Job.objects.filter(vm=vm).exists()
    assert not VirtualMachine.objects.filter(name="web2").exists()
    StorageDomain.objects.filter(pk=domain.pk).update(status=SD.ACTIVE)
    assert vm_run(vm_id=vm.pk, user=admin).vm_id == vm.pk


def test_a_failed_job_never_leaves_the_domain_busy(admin, site, work):
    dc, hosts = site
    domain = work(lambda: create(admin, dc))
    # The host drops before the job reaches it.
    type(hosts[0]).objects.filter(pk=hosts[0].pk).update(uri="test:///gone/node.xml")
    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    domain.refresh_from_db()
    assert domain.status == SD.ACTIVE
    job = Job.objects.filter(kind="storage_domain_maintenance").get()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("The pool could not be stopped on every host. h1: ")


def test_remove_refuses_to_format_an_unattached_domain(admin, site):
    dc, _ = site
    domain = StorageDomainFactory(data_center=dc, status=SD.UNATTACHED, path="/srv/d")
    with pytest.raises(ActionRefused, match="is Unattached: no host holds its pool to format"):
        domains.storage_domain_remove(domain_id=domain.pk, user=admin, format_domain=True)
    assert StorageDomain.objects.get(pk=domain.pk).status == SD.UNATTACHED


def test_edit_renames_and_refuses_a_name_taken(admin, site):
    dc, _ = site
    first = StorageDomainFactory(data_center=dc, name="first")
    StorageDomainFactory(data_center=dc, name="second")
    domains.storage_domain_edit(domain_id=first.pk, user=admin, name="renamed", description="d")
    first.refresh_from_db()
    assert (first.name, first.description) == ("renamed", "d")
    with pytest.raises(ActionRefused, match="Name 'second' is already used"):
        domains.storage_domain_edit(domain_id=first.pk, user=admin, name="second")
    with pytest.raises(ActionRefused, match="control character"):
        domains.storage_domain_edit(domain_id=first.pk, user=admin, name="ok", description="\x07")


def test_task_queue_down_refuses_and_changes_nothing(admin, site, monkeypatch):
    dc, _ = site

    def down():
        raise ActionRefused("The task queue is unreachable (ConnectionError); nothing was changed.")

    monkeypatch.setattr(domains, "queue_ensure_available", down)
    with pytest.raises(ActionRefused, match="task queue is unreachable"):
        create(admin, dc)
    assert not StorageDomain.objects.exists()


# -- the monitor ---------------------------------------------------------------------------------


def test_each_host_keeps_its_own_figures_and_the_domain_never_flips(monitor, sync_hosts):
    """Today's bug: data1's Used/Free flipped with whichever host was polled last."""
    cluster = ClusterFactory()
    hosts = [HostFactory(cluster=cluster, name=f"h{n}") for n in (1, 2, 3)]
    domain = StorageDomainFactory(data_center=cluster.data_center, name="data1")
    for n, host in enumerate(hosts):
        vm = VMFactory(host=host)
        DiskFactory(
            vm=vm, storage_domain=domain, actual_bytes=(n + 1) * 6 * GiB, size_bytes=80 * GiB
        )
    sync_hosts(*hosts)
    seen = set()
    for _ in range(3):
        monitor.cycle()
        domain.refresh_from_db()
        seen.add((domain.total_bytes, domain.used_bytes, domain.free_bytes))
    assert len(seen) == 1
    per_host = {
        r.host.name: r.used_bytes
        for r in StorageDomainHost.objects.filter(domain=domain).select_related("host")
    }
    assert per_host == {"h1": 6 * GiB, "h2": 12 * GiB, "h3": 18 * GiB}
    assert domain.used_bytes == 36 * GiB and domain.status == SD.ACTIVE


def test_a_shared_domain_shows_its_one_pool(monitor, sync_hosts):
    cluster = ClusterFactory()
    hosts = [HostFactory(cluster=cluster, name=f"n{n}") for n in (1, 2)]
    domain = StorageDomainFactory(
        data_center=cluster.data_center, storage_type=StorageType.NFS, nfs_server="nfs", path="/e"
    )
    sync_hosts(*hosts)
    monitor.cycle()
    domain.refresh_from_db()
    pool = pool_on(hosts[0], domain)
    assert domain.total_bytes == pool.capacity  # not twice: one export seen by two hosts
    assert StorageDomainHost.objects.filter(domain=domain).count() == 2


def test_a_host_added_later_gets_the_pool(admin, site, monitor, work, sync_hosts):
    dc, hosts = site
    late = HostFactory(cluster=hosts[0].cluster, name="late", status=HostStatus.NON_RESPONSIVE)
    sync_hosts(late)  # its node file, written before the domain existed: no pool on it
    domain = work(lambda: create(admin, dc))
    assert not StorageDomainHost.objects.filter(host=late).exists()
    work(monitor.cycle)  # the host answers: Up, and its missing pool is set up by a job
    assert host_status(late) == HostStatus.UP
    assert pool_on(late, domain).active
    assert rows(domain)["late"] == (PoolStatus.ACTIVE, "")
    work(monitor.cycle)  # nothing more to do
    job = Job.objects.get(kind="storage_domain_activate")
    assert (job.status, job.user) == (JobStatus.SUCCEEDED, None)
    assert messages("activate_storage_domain") == [
        "Host late has no pool of storage domain local1 yet: setting it up.",
        "Storage domain local1 was set up on late.",
    ]


def test_the_monitor_keeps_a_set_up_error_and_reports_a_stopped_pool(admin, site, monitor, work):
    dc, hosts = site
    domain = work(lambda: create(admin, dc))
    StorageDomainHost.objects.filter(domain=domain, host=hosts[1]).update(
        status=PoolStatus.INACTIVE, error="cannot open directory", setup_failed=True
    )
    hypervisor.connect(hosts[0].uri).pool_stop(domain.pool_name)
    monitor.cycle()
    assert rows(domain) == {
        "h1": (PoolStatus.INACTIVE, f"Storage pool {domain.pool_name} is not active on host h1."),
        "h2": (PoolStatus.INACTIVE, "cannot open directory"),
    }
    domain.refresh_from_db()
    assert domain.status == SD.INACTIVE and domain.total_bytes == 0
