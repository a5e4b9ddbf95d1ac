"""What Detach, Remove of a storage domain and Remove of a logical network leave on a host
that was not Up at the time (vms/leftovers.py): recorded, taken off by the monitor once the
host is Up again, with an Event; kept when the name is wanted again; never anything else."""

import pytest
from factories import ClusterFactory, HostFactory
from monitor_support import host_status

import hypervisor
from portal.kernel.models import Event
from storage.choices import StorageDomainStatus, StorageType
from storage.models import StorageDomain
from vms import domains, networks
from vms.choices import HostStatus, NetworkKind
from vms.models import Host, HostLeftover

pytestmark = pytest.mark.django_db
SD = StorageDomainStatus


@pytest.fixture
def site(sync_hosts):
    cluster = ClusterFactory()
    hosts = [HostFactory(cluster=cluster, name=f"h{n}") for n in (1, 2)]
    sync_hosts(*hosts)
    return cluster.data_center, hosts


def pools(host) -> set[str]:
    return {p.name for p in hypervisor.connect(host.uri).list_pools()}


def nets(host) -> set[str]:
    return {n.name for n in hypervisor.connect(host.uri).list_networks()}


def down(host) -> None:
    Host.objects.filter(pk=host.pk).update(status=HostStatus.NON_RESPONSIVE)


def new_domain(admin, dc, work) -> StorageDomain:
    return work(
        lambda: domains.storage_domain_create(
            user=admin,
            name="local1",
            data_center_id=dc.pk,
            domain_function="data",
            storage_type=StorageType.LOCAL,
            path="/var/lib/vireo/local1",
        )
    )


def left_messages() -> list[str]:
    return list(
        Event.objects.filter(action="host_leftover_removed").values_list("message", flat=True)
    )


def test_a_detached_domain_s_pool_leaves_a_host_that_was_down_when_it_is_up(
    admin, site, monitor, work
):
    dc, (h1, h2) = site
    domain = new_domain(admin, dc, work)
    unrelated = "vireo-00000000-0000-0000-0000-000000000000"
    hypervisor.connect(h2.uri).pool_setup(
        hypervisor.PoolSpec(name=unrelated, type="dir", path="/srv/other"), build=False
    )
    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    down(h2)
    work(lambda: domains.storage_domain_detach(domain_id=domain.pk, user=admin))
    assert domain.pool_name not in pools(h1)
    assert domain.pool_name in pools(h2)  # it could not be reached
    assert list(HostLeftover.objects.values_list("host__name", "kind", "name")) == [
        ("h2", "pool", domain.pool_name)
    ]
    work(monitor.cycle)
    assert host_status(h2) == HostStatus.UP
    assert domain.pool_name not in pools(h2)
    assert unrelated in pools(h2)  # only what Vireo recorded is ever taken off
    assert not HostLeftover.objects.exists()
    assert left_messages() == [
        "The pool of storage domain local1 was taken off host h2, which was not Up when it was "
        "detached or removed."
    ]


def test_a_domain_attached_again_before_the_host_returns_keeps_its_pool(admin, site, monitor, work):
    dc, (h1, h2) = site
    domain = new_domain(admin, dc, work)
    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    down(h2)
    work(lambda: domains.storage_domain_detach(domain_id=domain.pk, user=admin))
    work(
        lambda: domains.storage_domain_attach(domain_id=domain.pk, user=admin, data_center_id=dc.pk)
    )
    assert StorageDomain.objects.get(pk=domain.pk).status == SD.ACTIVE
    work(monitor.cycle)
    assert domain.pool_name in pools(h2) and domain.pool_name in pools(h1)
    assert not HostLeftover.objects.exists() and left_messages() == []


def test_a_removed_domain_s_pool_leaves_a_host_in_maintenance_after_activate(
    admin, site, monitor, work
):
    dc, (h1, h2) = site
    domain = new_domain(admin, dc, work)
    work(lambda: domains.storage_domain_maintenance(domain_id=domain.pk, user=admin))
    Host.objects.filter(pk=h2.pk).update(status=HostStatus.MAINTENANCE)
    work(lambda: domains.storage_domain_remove(domain_id=domain.pk, user=admin))
    work(monitor.cycle)  # a host in Maintenance is not polled: the pool stays for now
    assert domain.pool_name in pools(h2)
    Host.objects.filter(pk=h2.pk).update(status=HostStatus.CONNECTING)
    work(monitor.cycle)
    assert domain.pool_name not in pools(h2) and not HostLeftover.objects.exists()


def test_a_removed_network_leaves_a_host_that_was_down_when_it_is_up(admin, site, monitor, work):
    dc, (h1, h2) = site
    network = work(
        lambda: networks.network_create(
            user=admin, data_center_id=dc.pk, name="blue", kind=NetworkKind.ISOLATED
        )
    )
    name = network.libvirt_name
    down(h2)
    work(lambda: networks.network_remove(network_id=network.pk, user=admin))
    assert name not in nets(h1) and name in nets(h2)
    work(monitor.cycle)
    assert name not in nets(h2) and not HostLeftover.objects.exists()
    assert left_messages() == [
        f"The libvirt network {name} of logical network blue was taken off host h2, which was "
        "not Up when it was detached or removed."
    ]
