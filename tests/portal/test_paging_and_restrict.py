"""Every list is paged alike (VIREO_PAGE_SIZE, one pager), and every model restricts itself:
`Model.objects.restrict(user, action)` answers as the permission resolver does."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse
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
from helpers import html_find, html_one, html_text

from accounts.permissions import restrict
from portal.kernel.models import Event, Job
from storage.models import Disk, StorageDomain
from vms.models import Cluster, DataCenter, Host, VirtualMachine


def _three_of_each():
    dc = DataCenterFactory(name="dc-a")
    DataCenterFactory(name="dc-b")
    DataCenterFactory(name="dc-c")
    cluster = ClusterFactory(data_center=dc)
    ClusterFactory(data_center=dc)
    ClusterFactory(data_center=dc)
    hosts = [HostFactory(cluster=cluster) for _ in range(3)]
    for _ in range(3):
        StorageDomainFactory(data_center=dc)
    vms = [VMFactory(host=hosts[0], cluster=cluster) for _ in range(3)]
    for vm in vms:
        DiskFactory(vm=vm)
        Job.objects.create(kind="vm_run", description=f"Run {vm.name}", vm=vm)
        Event.objects.create(message=f"{vm.name} started", vm=vm)


# Each list, the CSS of its rows, and the model it lists.
LISTS = [
    ("vms:list", "#vm-table tr.vm-row", VirtualMachine),
    ("vms:hosts", "#host-results tbody tr:not(.empty)", Host),
    ("vms:clusters", "#cluster-results tbody tr:not(.empty)", Cluster),
    ("vms:datacenters", "section.dc-block", DataCenter),
    ("storage:domains", "#domain-results tbody tr:not(.empty)", StorageDomain),
    ("storage:disks", "#disk-results tbody tr:not(.empty)", Disk),
    ("jobs", "#job-results tbody tr:not(.empty)", Job),
    ("events", "#event-results tr.event", Event),
]


@pytest.mark.parametrize(("url", "row", "model"), LISTS, ids=[u for u, _, _ in LISTS])
def test_every_list_is_paged_by_one_setting(admin_client, settings, url, row, model):
    _three_of_each()
    settings.VIREO_PAGE_SIZE = 2
    counted = model.objects.count()
    assert counted >= 3
    first = admin_client.get(reverse(url))
    assert len(html_find(first, row)) == 2
    pager = html_one(first, ".pager")
    assert html_text(pager).startswith(f"1–2 of {counted}")
    assert pager.cssselect("a")[-1].get("href").endswith("page=2")
    last = admin_client.get(reverse(url), {"page": (counted + 1) // 2})
    assert len(html_find(last, row)) == counted - 2 * ((counted - 1) // 2)


@pytest.mark.django_db
def test_objects_restrict_answers_as_the_resolver():
    mine, other = ClusterFactory(), ClusterFactory()
    my_host, _ = HostFactory(cluster=mine), HostFactory(cluster=other)
    my_vm, _ = VMFactory(cluster=mine, host=my_host), VMFactory(cluster=other)
    user = UserFactory()
    grant(user, "ClusterAdmin", mine)
    assert list(Host.objects.restrict(user)) == [my_host]
    assert list(VirtualMachine.objects.filter(name=my_vm.name).restrict(user, "run")) == [my_vm]
    for model in (Host, VirtualMachine, Cluster, DataCenter, StorageDomain, Disk, Job, Event):
        assert set(model.objects.restrict(user, "view")) == set(
            restrict(user, model.objects.all(), "view")
        ), model
    stranger = UserFactory()
    assert not VirtualMachine.objects.restrict(stranger, "view").exists()
    assert not Host.objects.restrict(AnonymousUser()).exists()
