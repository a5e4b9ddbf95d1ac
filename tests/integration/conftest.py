"""Fixtures of the integration suite: a real libvirtd with qemu, and dir pools on it."""

import uuid

import pytest
from libvirtd import ensure_libvirtd, make_pool, remove_pool

from hypervisor import Connection, HypervisorError


@pytest.fixture(scope="session")
def libvirt_uri() -> str:
    """URI of the private libvirtd with qemu, started if it is not running."""
    return ensure_libvirtd()


@pytest.fixture
def qemu_pool(libvirt_uri, tmp_path):
    """Name of a fresh transient dir pool backed by a tmp dir; removed afterwards."""
    name = make_pool(libvirt_uri, f"vireo-it-{uuid.uuid4().hex[:8]}", tmp_path / "pool")
    yield name
    remove_pool(libvirt_uri, name)


@pytest.fixture
def conn(libvirt_uri):
    """Our own connection to the host, to see what libvirt says (not Vireo's shared one)."""
    own = Connection(libvirt_uri)
    yield own
    own.close()


@pytest.fixture
def prefix(conn, qemu_pool):
    """A unique prefix for this test's VM names. Afterwards, whatever happened, every domain
    so named is destroyed and undefined and every volume in the pool deleted."""
    prefix = f"vireo-it-{uuid.uuid4().hex[:8]}"
    yield prefix
    for dom in conn.list_domains():
        if dom.name.startswith(prefix):
            for step in (conn.destroy, conn.undefine_domain):
                try:
                    step(dom.uuid)
                except HypervisorError:
                    pass  # not running, or already gone
    for vol in conn.list_volumes(qemu_pool):
        try:
            conn.delete_volume(qemu_pool, vol.name)
        except HypervisorError:
            pass
