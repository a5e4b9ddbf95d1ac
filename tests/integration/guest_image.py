"""A tiny guest that runs qemu-guest-agent, built at test time from Debian packages and cached.

The disk is a FAT file system with SYSLINUX (no partition table: SeaBIOS boots its first
sector) holding Debian's kernel and an initramfs: busybox, qemu-ga from the qemu-guest-agent
package with the host's copies of its libraries (the same Debian release), the virtio modules
it needs, /etc/os-release, and a utmp record of a user logged in on the console. Its init sets
the host name, puts an address on a dummy interface (and brings any NIC up), and starts qemu-ga
on the virtio-serial port named org.qemu.guest_agent.0. Nothing is downloaded but Debian
packages (`apt-get download`, about 75 MB, kept under CACHE/debs). Built once (about 25 s)
under CACHE, and reused. It boots under qemu's TCG (see test_guest_agent_qemu.py for why not
KVM on this machine) in about 20 s.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import shutil
import stat
import struct
import subprocess
import time
from pathlib import Path

CACHE = Path(os.environ.get("VIREO_TEST_CACHE", "/var/cache/vireo-test")) / "guest-agent"
IMAGE = CACHE / "guest-agent.raw"
PACKAGES = [
    "linux-image-amd64",
    "qemu-guest-agent",
    "busybox-static",
    "syslinux",
    "syslinux-common",
    "mtools",
    "dosfstools",
]
HOSTNAME = "vireo-guest.example.test"
DUMMY_ADDRESS = "192.0.2.77"  # TEST-NET-1: an address that can only be the guest's
USER = "tester"
PRETTY_NAME = "Vireo agent test guest (busybox)"
MODULES = ["virtio_pci", "virtio_console", "virtio_net", "virtio_blk", "dummy"]
VERSION = "2"  # bump to rebuild cached images after changing this file

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /run /tmp /var/run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules-load); do insmod "$m"; done
hostname {HOSTNAME}
ip link set lo up
ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy
ip link set dummy0 up
ip addr add {DUMMY_ADDRESS}/24 dev dummy0
for nic in /sys/class/net/eth*; do [ -e "$nic" ] && ip link set "${{nic##*/}}" up; done
# No udev here to make /dev/virtio-ports/<name>: find the agent's port by its name.
for i in $(seq 100); do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && PORT="/dev/${{p##*/}}"
  done
  [ -n "$PORT" ] && [ -e "$PORT" ] && break
  sleep 0.1
done
/usr/sbin/qemu-ga -m virtio-serial -p "$PORT" -d -t /run
echo "vireo-guest: qemu-ga started" > /dev/console
exec sh -c 'while true; do sleep 3600; done'
"""


def _run(*args: str, env: dict | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=300, env=env)


def _packages(root: Path) -> None:
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not any(debs.glob("linux-image-*.deb")):
        kernel = subprocess.run(
            ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True
        ).stdout
        names = [p for p in PACKAGES if p != "linux-image-amd64"]
        names += [line.split()[-1] for line in kernel.splitlines() if "Depends:" in line][:1]
        subprocess.run(["apt-get", "download", *names], cwd=debs, check=True, timeout=600)
    for deb in debs.glob("*.deb"):
        _run("dpkg-deb", "-x", str(deb), str(root))


def _libraries(binary: Path) -> list[Path]:
    """The host's shared libraries `binary` loads (the host runs the same Debian release)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            found.append(Path(path))
    return found


def _depends(module: Path) -> list[str]:
    """The modules `module` needs, from its .modinfo section's `depends=` (no depmod here)."""
    data = module.read_bytes()
    at = data.find(b"\0depends=")
    if at < 0:
        return []
    start = at + len(b"\0depends=")
    names = data[start : data.index(b"\0", start)].decode()
    return [n for n in names.split(",") if n]


def _modules(root: Path) -> list[Path]:
    """The module files for MODULES with their dependencies, in load order."""
    (base,) = (root / "lib/modules").iterdir()
    files = {p.name.split(".ko")[0].replace("-", "_"): p for p in base.rglob("*.ko")}
    order: list[Path] = []

    def add(name: str) -> None:
        module = files[name.replace("-", "_")]
        for need in _depends(module):
            add(need)
        if module not in order:
            order.append(module)

    for name in MODULES:
        add(name)
    return order


def _utmp_record() -> bytes:
    """One glibc x86_64 utmp entry: USER logged in on ttyS0 (what login(1) writes)."""
    now = int(time.time())
    return struct.pack(
        "<hxxi32s4s32s256shhiii4i20x",
        7,  # USER_PROCESS
        1,  # the pid of init: alive as long as the guest
        b"ttyS0",
        b"S0",
        USER.encode(),
        b"",
        0,
        0,
        0,
        now,
        0,
        0,
        0,
        0,
        0,
    )


def _cpio(tree: Path) -> bytes:
    """A newc cpio archive of `tree` (the kernel's initramfs format)."""
    out = bytearray()
    ino = 1

    def entry(name: str, mode: int, data: bytes) -> None:
        nonlocal ino
        header = "070701" + "".join(
            f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        )
        out.extend(header.encode() + name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))
        ino += 1

    for path in sorted(tree.rglob("*")):
        name = str(path.relative_to(tree))
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            entry(name, info.st_mode, os.readlink(path).encode())
        elif path.is_dir():
            entry(name, stat.S_IFDIR | 0o755, b"")
        else:
            entry(name, stat.S_IFREG | stat.S_IMODE(info.st_mode), path.read_bytes())
    entry("TRAILER!!!", 0, b"")
    return bytes(out)


def _initramfs(root: Path, tree: Path) -> bytes:
    for sub in ("bin", "usr/sbin", "etc", "var/run", "lib/modules"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "bin/busybox", tree / "bin/busybox")
    qemu_ga = root / "usr/sbin/qemu-ga"
    shutil.copy2(qemu_ga, tree / "usr/sbin/qemu-ga")
    for lib in _libraries(qemu_ga):
        target = tree / lib.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib.resolve(), target)
    modules = _modules(root)
    names = []
    for module in modules:
        shutil.copy2(module, tree / "lib/modules" / module.name)
        names.append(f"/lib/modules/{module.name}")
    (tree / "etc/modules-load").write_text("\n".join(names) + "\n")
    (tree / "etc/os-release").write_text(
        f'ID=vireo-test\nNAME="Vireo test guest"\nVERSION_ID="{VERSION}"\n'
        f'PRETTY_NAME="{PRETTY_NAME}"\n'
    )
    (tree / "etc/passwd").write_text(f"root:x:0:0:root:/:/bin/sh\n{USER}:x:1000:1000::/:/bin/sh\n")
    (tree / "etc/group").write_text(f"root:x:0:\n{USER}:x:1000:\n")
    (tree / "var/run/utmp").write_bytes(_utmp_record())
    init = tree / "init"
    init.write_text(INIT)
    init.chmod(0o755)
    return gzip.compress(_cpio(tree), compresslevel=6)


def _disk(root: Path, work: Path, initrd: bytes) -> None:
    env = {**os.environ, "PATH": f"{root / 'usr/bin'}:{root / 'sbin'}:{os.environ['PATH']}"}
    env["MTOOLS_SKIP_CHECK"] = "1"
    raw = work / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(96 * 1024 * 1024)
    _run(str(root / "sbin/mkfs.fat"), "-F", "32", "-n", "VIREO", str(raw), env=env)
    (work / "initrd.gz").write_bytes(initrd)
    (vmlinuz,) = (root / "boot").glob("vmlinuz-*")
    shutil.copy2(vmlinuz, work / "vmlinuz")
    (work / "syslinux.cfg").write_text(
        "DEFAULT guest\nPROMPT 0\nTIMEOUT 0\nLABEL guest\n  KERNEL vmlinuz\n"
        "  APPEND initrd=initrd.gz console=ttyS0 quiet\n"
    )
    for name in ("vmlinuz", "initrd.gz", "syslinux.cfg"):
        _run(str(root / "usr/bin/mcopy"), "-i", str(raw), str(work / name), f"::{name}", env=env)
    syslinux = root / "usr/bin/syslinux"
    _run(str(syslinux), "--install", str(raw), env=env)
    raw.rename(IMAGE)


def agent_guest_image() -> Path:
    """The raw disk image of the guest (built on first use, then read from the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stamp = CACHE / f"guest-agent.v{VERSION}"
    with open(CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time, even across processes
        if IMAGE.exists() and stamp.exists():
            return IMAGE
        work = CACHE / "work"
        shutil.rmtree(work, ignore_errors=True)
        root, tree = work / "root", work / "initramfs"
        root.mkdir(parents=True)
        _packages(root)
        _disk(root, work, _initramfs(root, tree))
        stamp.touch()
        shutil.rmtree(work, ignore_errors=True)
    return IMAGE
