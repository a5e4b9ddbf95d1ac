"""Real ISO 9660 images for the tests, built at test time with xorriso (`xorriso -as mkisofs`)
and cached by size under VIREO_TEST_CACHE (default /var/cache/vireo-test): nothing is
downloaded. Imported like `factories` (`from iso_build import built_iso`)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("VIREO_TEST_CACHE", "/var/cache/vireo-test"))


def built_iso(megabytes: int) -> Path:
    """An ISO of about `megabytes` MiB (one file of pseudo-random data, volume id VIREO_TEST),
    built once and reused; skips the test when xorriso is missing."""
    target = CACHE / f"vireo-test-{megabytes}m.iso"
    if target.exists():
        return target
    xorriso = shutil.which("xorriso")
    if xorriso is None:
        pytest.skip("xorriso is not installed (make system-packages installs it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        tree = Path(work) / "tree"
        tree.mkdir()
        seed = bytes(range(256)) * 4096  # 1 MiB, varied per MiB below
        with open(tree / "payload.bin", "wb") as payload:
            for n in range(max(1, megabytes - 1)):
                payload.write(seed[n % 256 :] + seed[: n % 256])
        (tree / "README.txt").write_text("Vireo test ISO\n")
        out = Path(work) / "out.iso"
        subprocess.run(
            [xorriso, "-as", "mkisofs", "-quiet", "-V", "VIREO_TEST", "-o", str(out), str(tree)],
            check=True,
            capture_output=True,
        )
        os.replace(out, target)  # atomic: a parallel test sees the whole file or none
    return target
