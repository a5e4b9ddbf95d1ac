"""Fixtures of the integration suite: a real libvirtd with qemu, and dir pools on it."""

import uuid

import pytest
from libvirtd import ensure_libvirtd, make_pool, remove_pool


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
