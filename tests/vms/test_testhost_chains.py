"""A test host (the demo's) reloaded from its node file keeps its snapshot chains."""

import pytest
from factories import DiskFactory, VMFactory

import hypervisor
from vms import snapshots, testhosts
from vms.choices import VMStatus
from vms.models import Snapshot

pytestmark = pytest.mark.django_db


def test_chains_survive_a_reload(admin, work, sync_hosts):
    vm = VMFactory(status=VMStatus.DOWN)
    disk = DiskFactory(vm=vm)
    sync_hosts(vm.host)
    for n in range(2):
        work(
            lambda n=n: snapshots.snapshot_create(
                vm_id=vm.pk, user=admin, description=f"s{n}", disk_ids=[disk.pk]
            )
        )
    disk.refresh_from_db()
    pool = disk.storage_domain.pool_name
    before = hypervisor.connect(vm.host.uri).volume_chain(pool, disk.volume_name)
    assert len(before) == 3

    # What a restarted demo does: the node file from the inventory, then the chains adopted.
    sync_hosts(vm.host)
    conn = hypervisor.connect(vm.host.uri)
    testhosts.chains_adopt(vm.host, conn)
    assert conn.volume_chain(pool, disk.volume_name) == before

    oldest = Snapshot.objects.filter(vm=vm).order_by("created_at").first()
    work(lambda: snapshots.snapshot_delete(vm_id=vm.pk, snapshot_id=oldest.pk, user=admin))
    disk.refresh_from_db()
    assert len(conn.volume_chain(pool, disk.volume_name)) == 2
    assert Snapshot.objects.filter(vm=vm).count() == 1
