"""The shape of hypervisor/: the class connect() picks, imports that point one way, one XML module."""

import ast
from pathlib import Path

import pytest

import hypervisor
from hypervisor.cache import connection_class
from hypervisor.datatypes import PoolSpec
from hypervisor.domainxml import pool_xml

PACKAGE = Path(hypervisor.__file__).parent


def _imports(path: Path) -> set[str]:
    """The hypervisor.* modules `path` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name.split(".")[1] for name in found if name.startswith("hypervisor.")}


MODULES = {path.stem: _imports(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


@pytest.mark.parametrize(
    ("uri", "cls"),
    [
        ("test:///default", hypervisor.TestDriverConnection),
        ("test:///abs/node.xml", hypervisor.TestDriverConnection),
        ("test+unix:///default", hypervisor.TestDriverConnection),
        ("qemu:///system", hypervisor.Connection),
        ("qemu+ssh://root@host/system", hypervisor.Connection),
    ],
)
def test_the_uri_picks_the_connection_class(uri, cls):
    assert connection_class(uri) is cls


def test_connect_gives_the_test_driver_its_own_class(node_uri):
    conn = hypervisor.connect(node_uri)
    assert type(conn) is hypervisor.TestDriverConnection
    assert isinstance(conn, hypervisor.Connection)


def test_imports_inside_hypervisor_point_one_way():
    """No module imports, directly or through others, a module that imports it."""

    def reachable(start: str) -> set[str]:
        seen, todo = set(), list(MODULES[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(MODULES.get(name, ()))
        return seen

    cycles = sorted(name for name in MODULES if name in reachable(name))
    assert cycles == []
    assert "testdriver" not in reachable("connection")  # the real Connection knows no subclass


def test_the_real_connection_has_no_test_driver_branch():
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        assert "_emulated" not in text, path.name
        assert "TYPE_CHECKING" not in text, path.name


def test_libvirt_xml_is_built_and_read_in_domainxml_only():
    """testnode renders the test driver's node files (with domainxml's <domain> builder);
    consolexml, next to domainxml, holds the graphics devices' XML (domainxml calls it)."""
    users = sorted(path.stem for path in PACKAGE.glob("*.py") if "xml.etree" in path.read_text())
    assert users == ["consolexml", "domainxml", "testnode"]


def test_nfs_mount_options_are_checked_words_in_the_pool_xml():
    spec = PoolSpec(
        name="p",
        type="netfs",
        path="/m",
        source_host="h",
        source_dir="/x",
        mount_options=("soft", "timeo=100"),
    )
    assert '<fs:option name="soft" /><fs:option name="timeo=100" />' in pool_xml(spec)
    for bad in ("soft,hard", "a b", "x=$(id)", "", "timeo=1\n"):
        with pytest.raises(ValueError):
            pool_xml(PoolSpec(**{**spec.__dict__, "mount_options": (bad,)}))
