"""Bootable ISO images for tests that boot a guest from a CD (Run Once, an uploaded ISO in the
browser suite), built from Debian packages at test time and cached; nothing is downloaded.

`bootable_iso()` is iPXE's ISO (Debian's `ipxe` package, in the Makefile's DEB_PACKAGES): a
2 MiB El Torito image booted by ISOLINUX, which loads iPXE. A guest that booted from it holds
ISOLINUX (`BOOT_MARKER`) in its memory, where nothing else puts it (SeaBIOS does not), so a
test tells a guest that booted from the CD from one that did not; on a screen, iPXE's banner
shows."""

import os
import shutil
import tempfile
from pathlib import Path

IPXE_ISO = Path("/usr/lib/ipxe/ipxe.iso")
# What a guest that booted from the CD has in its memory: the CD's boot loader.
BOOT_MARKER = b"ISOLINUX"


def cache_dir() -> Path:
    """Where built images are kept between runs: $VIREO_TEST_CACHE, else
    /var/cache/vireo-test, else a directory under the system's temporary one."""
    for candidate in (os.environ.get("VIREO_TEST_CACHE"), "/var/cache/vireo-test"):
        if not candidate:
            continue
        path = Path(candidate) / "isos"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    path = Path(tempfile.gettempdir()) / "vireo-test-cache" / "isos"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bootable_iso() -> Path:
    """The path of a small bootable ISO (iPXE), cached: copy it where a pool can take it."""
    cached = cache_dir() / "ipxe.iso"
    if cached.exists() and cached.stat().st_size == IPXE_ISO.stat().st_size:
        return cached
    if not IPXE_ISO.exists():
        raise FileNotFoundError(
            f"{IPXE_ISO} is missing: install Debian's ipxe package (make system-packages)."
        )
    partial = cached.with_suffix(".part")
    shutil.copyfile(IPXE_ISO, partial)
    partial.replace(cached)
    return cached


def iso_into_pool(pool_dir: str | os.PathLike, name: str, source: Path | None = None) -> Path:
    """Put an ISO (the bootable one by default) into a dir pool's directory as volume `name`
    (refresh the pool afterwards to see it)."""
    target = Path(pool_dir) / name
    shutil.copyfile(source or bootable_iso(), target)
    return target
