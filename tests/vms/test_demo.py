"""The demo that `make run` serves (vms/demo.py on test-driver hosts, with the monitor of
`manage.py demo_monitor`): its hosts come Up with the VMs in the states it seeded, and its
shared (NFS) data domain lets a running VM Migrate between its hosts, as a newcomer tries."""

import pytest
from django.conf import settings
from monitor_support import InlineExecutor

import hypervisor
from storage.choices import StorageType
from storage.models import StorageDomain
from vms.choices import HostStatus, VMStatus
from vms.demo import demo_seed
from vms.migration import vm_migrate
from vms.models import Host, VirtualMachine
from vms.testhosts import TestHostMonitor

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "VAR_DIR", tmp_path)
    assert demo_seed()
    monitor = TestHostMonitor(poll_seconds=60, stale_seconds=30)
    monitor.pool.shutdown()
    monitor.pool = InlineExecutor()
    monitor.cycle()
    yield monitor
    monitor.stop.set()
    hypervisor.disconnect_all()


def test_the_demo_comes_up_and_its_vms_migrate_on_shared_storage(demo, admin, work):
    assert set(Host.objects.values_list("status", flat=True)) == {HostStatus.UP}
    data = StorageDomain.objects.get(name="data1")
    assert data.storage_type == StorageType.NFS
    vm = VirtualMachine.objects.filter(status=VMStatus.UP, cluster__name="Default").first()
    source = vm.host
    work(lambda: vm_migrate(vm_id=vm.pk, user=admin))  # Select Host Automatically
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP and vm.host != source and vm.host.cluster == source.cluster
    demo.cycle()
    vm.refresh_from_db()
    assert (vm.status, vm.host.status) == (VMStatus.UP, HostStatus.UP)
    state = hypervisor.connect(vm.host.uri).get_domain(str(vm.uuid)).state
    assert state == hypervisor.DomainState.RUNNING
