"""factory-boy factories for the inventory. Hosts get their own libvirt test-driver node file
(see `testhost_sync` in conftest) so every test has a private, consistent hypervisor."""

import itertools

import factory
from django.contrib.auth import get_user_model
from helpers import GiB

from storage.choices import DiskStatus, DomainFunction, StorageDomainStatus
from storage.models import Disk, StorageDomain
from vms.choices import HostStatus, VMStatus
from vms.models import (
    Cluster,
    DataCenter,
    Host,
    Network,
    NetworkInterface,
    VirtualMachine,
    VnicProfile,
)

_host_numbers = itertools.count(1)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("secret")


class SuperUserFactory(UserFactory):
    username = factory.Sequence(lambda n: f"admin{n}")
    is_superuser = True
    is_staff = True


class DataCenterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DataCenter

    name = factory.Sequence(lambda n: f"dc{n}")


class ClusterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Cluster

    name = factory.Sequence(lambda n: f"cluster{n}")
    data_center = factory.SubFactory(DataCenterFactory)
    shutdown_timeout = 5


class HostFactory(factory.django.DjangoModelFactory):
    """A host on libvirt's test driver; its node file lives under settings.VAR_DIR."""

    class Meta:
        model = Host

    name = factory.Sequence(lambda n: f"host{n}")
    cluster = factory.SubFactory(ClusterFactory)
    status = HostStatus.UP
    # What the monitor stores for a test-driver host on connecting (vms.testhosts' node file).
    cpus = 16
    memory_mb = 64 * 1024

    @factory.lazy_attribute
    def uri(self):
        from django.conf import settings

        return f"test://{settings.VAR_DIR / 'testhosts' / f'{self.name}-{next(_host_numbers)}.xml'}"


class StorageDomainFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StorageDomain

    name = factory.Sequence(lambda n: f"data{n}")
    data_center = factory.SubFactory(DataCenterFactory)
    domain_function = DomainFunction.DATA
    pool_name = factory.LazyAttribute(lambda o: o.name)
    status = StorageDomainStatus.ACTIVE
    total_bytes = 100 * GiB
    free_bytes = 100 * GiB


class VMFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VirtualMachine

    name = factory.Sequence(lambda n: f"vm{n}")
    host = factory.SubFactory(HostFactory)
    cluster = factory.LazyAttribute(lambda o: o.host.cluster)
    status = VMStatus.DOWN
    memory_mb = 1024
    vcpus = 1


class DiskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Disk

    alias = factory.LazyAttribute(lambda o: f"{o.vm.name}_Disk1" if o.vm else "floating_Disk1")
    vm = factory.SubFactory(VMFactory)
    host = factory.LazyAttribute(lambda o: o.vm.host if o.vm else None)
    storage_domain = factory.LazyAttribute(
        lambda o: (
            StorageDomain.objects.filter(data_center=o.vm.cluster.data_center).first()
            or StorageDomainFactory(data_center=o.vm.cluster.data_center)
        )
    )
    volume_name = factory.Sequence(lambda n: f"vol{n}.qcow2")
    size_bytes = 1 * GiB
    actual_bytes = 0
    sparse = True
    status = DiskStatus.OK


class NetworkFactory(factory.django.DjangoModelFactory):
    """A logical network (isolated) with its default vNIC profile of its name."""

    class Meta:
        model = Network
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"net{n}")
    data_center = factory.SubFactory(DataCenterFactory)

    @factory.post_generation
    def default_profile(obj, create, extracted, **kwargs):
        if create and extracted is not False:
            VnicProfile.objects.create(network=obj, name=obj.name)


def profile_of(network) -> VnicProfile:
    """A network's default vNIC profile (the one named after it)."""
    return network.profiles.get(name=network.name)


_macs = itertools.count(1)


class NicFactory(factory.django.DjangoModelFactory):
    """A VM's network interface on a network's default profile (a network of the VM's data
    center made for it unless given), with a MAC outside every data center's pool."""

    class Meta:
        model = NetworkInterface

    vm = factory.SubFactory(VMFactory)
    name = "nic1"
    profile = factory.LazyAttribute(
        lambda o: profile_of(NetworkFactory(data_center=o.vm.cluster.data_center))
    )
    mac = factory.LazyFunction(lambda: _mac_outside_pools(next(_macs)))


def _mac_outside_pools(n: int) -> str:
    return f"02:00:00:{n >> 16 & 0xFF:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"


def grant(principal, role_name: str, obj) -> None:
    """Give a user or group a built-in (or custom) role on an object, as the Add window does."""
    from guardian.shortcuts import assign_perm

    from accounts.models import Role
    from accounts.services import role_permission

    assign_perm(role_permission(Role.objects.get(name=role_name), type(obj)), principal, obj)
