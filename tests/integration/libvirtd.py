"""A private libvirtd with qemu for the integration suite: root, no systemd, no network.

The daemon runs in its own mount namespace where /etc/libvirt, /run/libvirt and
/var/lib/libvirt are bind mounts of directories under BASE, so its configuration, its
definitions and its state never touch the system's. Its socket is reached from outside at
BASE/run/libvirt-sock. It stays up after the tests; ensure_libvirtd() reuses it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

BASE = Path("/run/vireo-it")
SOCKET = BASE / "run" / "libvirt-sock"
ADMIN_SOCKET = BASE / "run" / "libvirt-admin-sock"
URI = f"qemu:///system?socket={SOCKET}"
ADMIN_URI = f"libvirtd:///system?socket={ADMIN_SOCKET}"
LOG = BASE / "libvirtd.log"
PACKAGES = ["libvirt-daemon-system", "qemu-system-x86", "qemu-utils"]
PRIVATE_DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt"}

LIBVIRTD_CONF = f"""\
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:{LOG}"
"""
# What lets qemu run in an unprivileged container: no user switch, no security driver, no
# cgroups or per-VM mount namespaces, no virtlogd, no ownership juggling.
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""


def _quiet(_ctx: object, _err: object) -> None:
    """Keep libvirt from printing the errors of our probes."""


libvirt.registerErrorHandler(_quiet, None)


def _answers(uri: str = URI) -> bool:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        conn.getVersion()
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def _install_packages() -> None:
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    needed = ("libvirtd", "qemu-system-x86_64", "qemu-img", "virsh")
    if all(shutil.which(binary, path=path) for binary in needed):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", *PACKAGES], check=True, env=env)


def _write_config() -> None:
    for name, target in PRIVATE_DIRS.items():
        (BASE / name).mkdir(parents=True, exist_ok=True)
        Path(target).mkdir(parents=True, exist_ok=True)  # the mount point
    (BASE / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
    (BASE / "etc" / "qemu.conf").write_text(QEMU_CONF)


def _start() -> None:
    binds = " && ".join(f"mount --bind {BASE / n} {t}" for n, t in PRIVATE_DIRS.items())
    daemon = f"exec libvirtd --daemon --config {BASE / 'etc' / 'libvirtd.conf'}"
    daemon += f" --pid-file {BASE / 'libvirtd.pid'}"
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{binds} && {daemon}"],
        check=True,
        env=env,
        timeout=60,
    )


def ensure_libvirtd(timeout: float = 60) -> str:
    """Start the private libvirtd unless it already answers; its qemu URI."""
    BASE.mkdir(parents=True, exist_ok=True)
    with open(BASE / "ensure.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time, even across processes
        if _answers():
            return URI
        _install_packages()
        _write_config()
        SOCKET.unlink(missing_ok=True)
        _start()
        deadline = time.monotonic() + timeout
        while not _answers():
            if time.monotonic() > deadline:
                log = LOG.read_text()[-3000:] if LOG.exists() else "(no log)"
                raise RuntimeError(f"libvirtd did not answer at {URI} within {timeout} s:\n{log}")
            time.sleep(0.2)
    return URI


def make_pool(conn_uri: str, name: str, path: str | os.PathLike[str]) -> str:
    """Create and start a transient dir pool `name` at `path` (replacing one of that name)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = str(path)
    remove_pool(conn_uri, name)
    conn = libvirt.open(conn_uri)
    try:
        conn.storagePoolCreateXML(ET.tostring(pool, encoding="unicode"), 0)
    finally:
        conn.close()
    return name


def remove_pool(conn_uri: str, name: str) -> None:
    """Stop and forget the pool `name`, if any; its files stay."""
    conn = libvirt.open(conn_uri)
    try:
        pool = conn.storagePoolLookupByName(name)
        if pool.isActive():
            pool.destroy()
        if pool.isPersistent():
            pool.undefine()
    except libvirt.libvirtError:
        pass  # no such pool
    finally:
        conn.close()
