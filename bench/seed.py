"""Bulk inventories on libvirt test-driver hosts (node files under VAR_DIR)."""

import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from storage.choices import DomainFunction, StorageDomainStatus
from storage.models import Disk, StorageDomain
from vms.choices import HostStatus, VMStatus
from vms.models import Cluster, DataCenter, Host, VirtualMachine

GiB = 1024**3
MiB = 1024**2
# Stable statuses only (a busy status with no job behind it would be settled by the monitor).
STATUS_MIX = [VMStatus.UP] * 5 + [VMStatus.DOWN] * 3 + [VMStatus.SUSPENDED, VMStatus.PAUSED]


@dataclass
class Inventory:
    data_centers: list[DataCenter]
    clusters: list[Cluster]
    hosts: list[Host]
    vm_count: int
    seconds: float

    def merge(self, other: "Inventory") -> None:
        """Count another seeded inventory in with this one."""
        self.data_centers += other.data_centers
        self.clusters += other.clusters
        self.hosts += other.hosts
        self.vm_count += other.vm_count
        self.seconds += other.seconds


def superuser():
    User = get_user_model()
    user = User.objects.filter(username="bench-admin").first()
    return user or User.objects.create_superuser("bench-admin", "bench@example.com", "bench")


def test_uri(prefix: str, n: int) -> str:
    return f"test://{settings.VAR_DIR / 'bench' / f'{prefix}{n:03d}.xml'}"


def inventory_seed(
    *,
    prefix: str,
    data_centers: int,
    clusters: int,
    hosts: int,
    vms: int,
    statuses=None,
    user=None,
    shutdown_timeout: int = 10,
) -> Inventory:
    """Data centers, clusters, hosts (test driver, Up), one data domain per data center, and
    `vms` VMs spread round-robin over the hosts, each with one disk; all by bulk_create."""
    statuses = statuses or STATUS_MIX
    started = time.perf_counter()
    now = timezone.now()
    with transaction.atomic():
        dcs = DataCenter.objects.bulk_create(
            [DataCenter(name=f"{prefix}-dc{n + 1}") for n in range(data_centers)]
        )
        domains = {
            dc.pk: sd
            for dc, sd in zip(
                dcs,
                StorageDomain.objects.bulk_create(
                    [
                        StorageDomain(
                            name=f"{prefix}-data{n + 1}",
                            data_center=dc,
                            domain_function=DomainFunction.DATA,
                            pool_name=f"{prefix}-data{n + 1}",
                            status=StorageDomainStatus.ACTIVE,
                            total_bytes=2 * 1024 * GiB,
                            free_bytes=2 * 1024 * GiB,
                        )
                        for n, dc in enumerate(dcs)
                    ]
                ),
                strict=True,
            )
        }
        cluster_rows = Cluster.objects.bulk_create(
            [
                Cluster(
                    name=f"{prefix}-cluster{n + 1:02d}",
                    data_center=dcs[n * data_centers // clusters],
                    shutdown_timeout=shutdown_timeout,
                )
                for n in range(clusters)
            ]
        )
        host_rows = Host.objects.bulk_create(
            [
                Host(
                    name=f"{prefix}-host{n + 1:03d}",
                    cluster=cluster_rows[n * clusters // hosts],
                    uri=test_uri(f"{prefix}-host", n + 1),
                    status=HostStatus.UP,
                    hostname=f"{prefix}-host{n + 1:03d}",
                    cpus=16,
                    memory_mb=64 * 1024,
                    last_seen=now,
                )
                for n in range(hosts)
            ]
        )
        vm_objs = []
        for n in range(vms):
            host = host_rows[n % hosts]
            status = statuses[n % len(statuses)]
            running = status in (VMStatus.UP, VMStatus.PAUSED)
            vm_objs.append(
                VirtualMachine(
                    name=f"{prefix}-vm{n:05d}",
                    cluster=host.cluster,
                    host=host,
                    status=status,
                    memory_mb=512 * (1 + n % 16),
                    vcpus=1 + n % 8,
                    started_at=now - timedelta(minutes=n % 5000) if running else None,
                    created_by=user,
                    description=f"bench VM {n}",
                )
            )
        vm_rows = VirtualMachine.objects.bulk_create(vm_objs, batch_size=2000)
        Disk.objects.bulk_create(
            [
                Disk(
                    alias=f"{vm.name}_Disk1",
                    vm=vm,
                    storage_domain=domains[vm.cluster.data_center_id],
                    host=vm.host,
                    volume_name=f"{vm.uuid}-vda.qcow2",
                    size_bytes=(10 + n % 90) * GiB,
                    # The test driver's pools hold 100 GiB: stay under it per host.
                    actual_bytes=(1 + n % 8) * 64 * MiB,
                    sparse=True,
                )
                for n, vm in enumerate(vm_rows)
            ],
            batch_size=2000,
        )
    return Inventory(
        data_centers=dcs,
        clusters=cluster_rows,
        hosts=host_rows,
        vm_count=len(vm_rows),
        seconds=time.perf_counter() - started,
    )
