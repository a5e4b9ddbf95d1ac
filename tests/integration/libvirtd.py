"""A private libvirtd with qemu for the integration suite: root, no systemd, no network.

The daemon runs in its own mount namespace where /etc/libvirt, /run/libvirt and
/var/lib/libvirt are bind mounts of directories under BASE, so its configuration, its
definitions and its state never touch the system's. Its socket is reached from outside at
BASE/run/libvirt-sock. It stays up after the tests; ensure_libvirtd() reuses it.

For migration, `ensure_peer(n)` starts further daemons the same way (n = 1, 2), each under
/run/vireo-it-<n> with its own host UUID, its own range of qemu migration ports, and
listening for libvirt on 127.0.0.1:1651<n> over plain TCP with no authentication (loopback
only), so one can reach the other peer-to-peer as `qemu+tcp://127.0.0.1:1651<n>/system`, the
way two KVM hosts reach each other. They share this machine's files, so a directory is
storage both hosts see at the same path.
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
# Each daemon hands out VNC/SPICE ports from its own range (qemu asks the kernel whether a
# port is free only when it binds, so two daemons sharing one range race for the same port):
# this one 5900-6099, peer n 5900 + 200n up.
MAIN_DISPLAY_PORTS = "remote_display_port_min = 5900\nremote_display_port_max = 6099\n"
QEMU_CONF += MAIN_DISPLAY_PORTS


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


def _start(base: Path = BASE, *, listen: bool = False) -> None:
    binds = " && ".join(f"mount --bind {base / n} {t}" for n, t in PRIVATE_DIRS.items())
    daemon = f"exec libvirtd --daemon {'--listen ' if listen else ''}"
    daemon += f"--config {base / 'etc' / 'libvirtd.conf'} --pid-file {base / 'libvirtd.pid'}"
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{binds} && {daemon}"],
        check=True,
        env=env,
        timeout=60,
    )


def _peer_config(n: int, base: Path) -> tuple[str, str]:
    libvirtd = LIBVIRTD_CONF.replace(str(LOG), str(base / "libvirtd.log")) + (
        f'host_uuid = "8d6a8e84-2b4c-4d0e-9a55-00000000000{n}"\n'
        "listen_tls = 0\nlisten_tcp = 1\n"
        f'tcp_port = "{16510 + n}"\nlisten_addr = "127.0.0.1"\nauth_tcp = "none"\n'
    )
    low, display = 49200 + 100 * n, 5900 + 200 * n
    qemu = QEMU_CONF.replace(MAIN_DISPLAY_PORTS, "") + (
        f"migration_port_min = {low}\nmigration_port_max = {low + 99}\n"
        f"remote_display_port_min = {display}\nremote_display_port_max = {display + 199}\n"
    )
    return libvirtd, qemu


def peer_uri(n: int) -> str:
    """The libvirt URI of peer daemon `n` (1 or 2), as a host of Vireo names it."""
    return f"qemu+tcp://127.0.0.1:{16510 + n}/system"


def ensure_peer(n: int, timeout: float = 60) -> str:
    """Start peer daemon `n` (1 or 2) unless it answers with the configuration written now;
    its URI."""
    if n not in (1, 2):
        raise ValueError(n)
    base = Path(f"/run/vireo-it-{n}")
    uri = peer_uri(n)
    base.mkdir(parents=True, exist_ok=True)
    libvirtd_conf, qemu_conf = _peer_config(n, base)
    with open(base / "ensure.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        etc = base / "etc"
        current = (etc / "libvirtd.conf").read_text() if (etc / "libvirtd.conf").exists() else ""
        if _answers(uri) and current == libvirtd_conf:
            return uri
        _install_packages()
        pid = base / "libvirtd.pid"
        if pid.exists():  # an older configuration: start again
            try:
                os.kill(int(pid.read_text().strip()), 15)
            except (ValueError, ProcessLookupError):
                pass
            time.sleep(1)
        for name, target in PRIVATE_DIRS.items():
            (base / name).mkdir(parents=True, exist_ok=True)
            Path(target).mkdir(parents=True, exist_ok=True)
        (etc / "libvirtd.conf").write_text(libvirtd_conf)
        (etc / "qemu.conf").write_text(qemu_conf)
        (base / "run" / "libvirt-sock").unlink(missing_ok=True)
        _start(base, listen=True)
        deadline = time.monotonic() + timeout
        while not _answers(uri):
            if time.monotonic() > deadline:
                log = base / "libvirtd.log"
                tail = log.read_text()[-3000:] if log.exists() else "(no log)"
                raise RuntimeError(f"libvirtd did not answer at {uri} within {timeout} s:\n{tail}")
            time.sleep(0.2)
    return uri


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
