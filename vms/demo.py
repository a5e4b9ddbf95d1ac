"""The demo inventory that `make run` serves: a Default data center and cluster, two
test-driver hosts, a data storage domain and a dozen VMs in mixed states."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accounts.models import Role
from accounts.services import role_permission
from storage.choices import DomainFunction, StorageDomainStatus, StorageType
from storage.models import Disk, StorageDomain

from .choices import HostStatus, NetworkKind, VMStatus
from .domains import pool_name_new
from .models import (
    Cluster,
    DataCenter,
    Host,
    Network,
    NetworkInterface,
    Template,
    VirtualMachine,
    VnicProfile,
)
from .vnics import mac_pool_range, mac_text

GiB = 1024**3
DEMO_VMS = [
    ("web01", VMStatus.UP, 2048, 2),
    ("web02", VMStatus.UP, 2048, 2),
    ("web03", VMStatus.DOWN, 2048, 2),
    ("db01", VMStatus.UP, 8192, 4),
    ("db02", VMStatus.SUSPENDED, 8192, 4),
    ("cache01", VMStatus.UP, 4096, 2),
    ("build01", VMStatus.DOWN, 4096, 8),
    ("build02", VMStatus.PAUSED, 4096, 8),
    ("mail01", VMStatus.UP, 2048, 1),
    ("ldap01", VMStatus.UP, 1024, 1),
    ("test-win10", VMStatus.SUSPENDED, 4096, 2),
    ("scratch", VMStatus.DOWN, 512, 1),
]


LAB_VMS = [
    ("lab-ci01", VMStatus.UP, 2048, 2),
    ("lab-ci02", VMStatus.DOWN, 2048, 2),
    ("lab-sandbox", VMStatus.UP, 1024, 1),
]

# user name (= password) -> (role, object it is given on, what logging in as them shows)
DEMO_USERS = {
    "dcadmin": (
        "DataCenterAdmin",
        "dc",
        "DataCenterAdmin on data center Default: all its VMs, hosts, clusters",
    ),
    "labadmin": ("ClusterAdmin", "lab", "ClusterAdmin on cluster Lab: only the three lab VMs"),
    "alice": (
        "UserRole",
        "web01",
        "UserRole on web01 and web02, UserVmEngine on scratch: the User Portal",
    ),
    "bob": (
        "PowerUserRole",
        "dc",
        "PowerUserRole on data center Default: creates VMs in the User Portal",
    ),
}


def test_host_uri(name: str) -> str:
    return f"test://{settings.VAR_DIR / 'demo' / f'{name}.xml'}"


@transaction.atomic
def demo_seed(*, hosts: int = 2) -> bool:
    """Create the demo inventory unless a data center exists already; True if it was made."""
    User = get_user_model()
    if not User.objects.filter(username="admin").exists():
        User.objects.create_superuser("admin", "admin@example.com", "admin")
    if DataCenter.objects.exists():
        return False
    dc = DataCenter.objects.create(name="Default", description="The default data center")
    cluster = Cluster.objects.create(
        name="Default",
        data_center=dc,
        description="The default cluster",
        shutdown_reason_enabled=True,
        shutdown_timeout=60,
    )
    host_rows = [
        Host.objects.create(
            name=f"host{n}",
            cluster=cluster,
            uri=test_host_uri(f"host{n}"),
            status=HostStatus.CONNECTING,
        )
        for n in range(1, hosts + 1)
    ]
    # NFS: shared by the data center's hosts, so the demo's VMs can Migrate (the test driver
    # mounts nothing; a real host would mount nfs.demo.lab:/exports/data1).
    data = StorageDomain.objects.create(
        name="data1",
        data_center=dc,
        domain_function=DomainFunction.DATA,
        storage_type=StorageType.NFS,
        nfs_server="nfs.demo.lab",
        path="/exports/data1",
        pool_name=pool_name_new(),
        status=StorageDomainStatus.ACTIVE,
        total_bytes=2 * 1024 * GiB,
        free_bytes=2 * 1024 * GiB,
    )
    now = timezone.now()
    for n, (name, status, memory, cpus) in enumerate(DEMO_VMS):
        host = host_rows[n % len(host_rows)]
        vm = VirtualMachine.objects.create(
            name=name,
            cluster=cluster,
            host=host,
            status=status,
            memory_mb=memory,
            vcpus=cpus,
            started_at=now - timedelta(hours=n * 7 + 1) if status == VMStatus.UP else None,
            description=f"Demo {name}",
        )
        Disk.objects.create(
            alias=f"{name}_Disk1",
            vm=vm,
            storage_domain=data,
            volume_name=f"{vm.uuid}-vda.qcow2",
            size_bytes=(10 + n * 5) * GiB,
            actual_bytes=(1 + n) * GiB,
            sparse=True,
        )
    lab = Cluster.objects.create(
        name="Lab",
        data_center=dc,
        description="Build and test machines",
        shutdown_reason_enabled=False,
        shutdown_timeout=30,
    )
    lab_host = Host.objects.create(
        name="labhost1", cluster=lab, uri=test_host_uri("labhost1"), status=HostStatus.CONNECTING
    )
    for n, (name, status, memory, cpus) in enumerate(LAB_VMS):
        vm = VirtualMachine.objects.create(
            name=name,
            cluster=lab,
            host=lab_host,
            status=status,
            memory_mb=memory,
            vcpus=cpus,
            started_at=now - timedelta(minutes=40 * (n + 1)) if status == VMStatus.UP else None,
        )
        Disk.objects.create(
            alias=f"{name}_Disk1",
            vm=vm,
            storage_domain=data,
            volume_name=f"{vm.uuid}-vda.qcow2",
            size_bytes=20 * GiB,
            actual_bytes=2 * GiB,
        )
    network = Network.objects.create(
        name="ovirtmgmt",
        data_center=dc,
        description="Management and VM network",
        kind=NetworkKind.NAT,
        ipv4="10.150.0.1/24",
    )
    profile = VnicProfile.objects.create(network=network, name=network.name)
    first, _last = mac_pool_range(dc.pk)
    base = int(first.replace(":", ""), 16)
    NetworkInterface.objects.bulk_create(
        NetworkInterface(vm=vm, profile=profile, mac=mac_text(base + n))
        for n, vm in enumerate(VirtualMachine.objects.order_by("pk"))
    )
    Template.objects.create(
        name="small-linux",
        data_center=dc,
        description="1 vCPU, 1 GiB, 10 GiB disk",
        memory_mb=1024,
        vcpus=1,
        disk_bytes=10 * GiB,
    )
    _demo_users(dc, lab)
    return True


def _demo_users(dc: DataCenter, lab: Cluster) -> None:
    User = get_user_model()
    targets = {"dc": dc, "lab": lab}
    for username, (role_name, key, _what) in DEMO_USERS.items():
        user = User.objects.create_user(username, f"{username}@example.com", username)
        obj = targets.get(key) or VirtualMachine.objects.get(name=key)
        assign_perm(role_permission(Role.objects.get(name=role_name), type(obj)), user, obj)
    alice = User.objects.get(username="alice")
    assign_perm(
        role_permission(Role.objects.get(name="UserRole"), VirtualMachine),
        alice,
        VirtualMachine.objects.get(name="web02"),
    )
    assign_perm(
        role_permission(Role.objects.get(name="UserVmEngine"), VirtualMachine),
        alice,
        VirtualMachine.objects.get(name="scratch"),
    )
