"""Fixtures for the hypervisor layer: test-driver nodes rendered into tmp_path."""

import pytest
from hypervisor_nodes import write_standard_node

import hypervisor


@pytest.fixture
def node_uri(tmp_path):
    """URI of a fresh standard test node (its own state), disconnected afterwards."""
    uri = write_standard_node(tmp_path)
    yield uri
    hypervisor.disconnect(uri)


@pytest.fixture
def conn(node_uri):
    """The shared Connection to the fresh test node."""
    return hypervisor.connect(node_uri)
