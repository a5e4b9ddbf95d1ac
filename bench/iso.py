"""Part iso: uploading a 1 GiB ISO through Vireo on the private libvirtd with qemu (the
integration suite's, started if needed).

1. `virsh vol-upload` of the ISO into a fresh volume of an ISO domain's pool: the baseline
   (before and after Vireo's upload, the better of the two: the file is then in the page
   cache, as the job's staged file is).
2. Vireo's path: the ISO sent through daphne's chunk endpoint in 8 MiB chunks (as the browser
   does), staged on disk, then the `iso_upload` job (run in this process) streaming the staged
   file into a new volume with libvirt's volume upload stream. The job's throughput is set
   next to virsh's (ratio), and the end-to-end time is reported too.
3. daphne's peak RSS (VmHWM, reset before the transfer through /proc/<pid>/clear_refs) against
   its RSS before: how much the web process grows while 1 GiB goes through it (goal < 64 MiB).
"""

import hashlib
import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings

from .live import Daphne, session_cookie

REPO = Path(__file__).resolve().parent.parent
CHUNK = int(os.environ.get("BENCH_ISO_CHUNK_MB", "8")) << 20  # the browser sends 8 MiB
MiB = 1 << 20


def _libvirtd() -> str:
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from libvirtd import ensure_libvirtd  # the integration suite's private libvirtd

    return ensure_libvirtd()


def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def _domain(uri: str, user, directory: Path):
    from portal.kernel.tasks import execute
    from storage.models import StorageDomain
    from vms import domains
    from vms.choices import HostStatus
    from vms.models import Cluster, DataCenter, Host

    dc = DataCenter.objects.create(name=f"iso-bench-{uuid.uuid4().hex[:6]}")
    cluster = Cluster.objects.create(name=f"{dc.name}-c", data_center=dc)
    Host.objects.create(name=f"{dc.name}-h", cluster=cluster, uri=uri, status=HostStatus.UP)
    domain = domains.storage_domain_create(
        user=user,
        name=f"{dc.name}-iso",
        data_center_id=dc.pk,
        domain_function="iso",
        storage_type="local",
        path=str(directory),
    )
    from portal.kernel.models import Job

    execute(Job.objects.filter(params__domain_id=domain.pk).latest("pk").pk)
    domain.refresh_from_db()
    return StorageDomain.objects.get(pk=domain.pk)


def _virsh_upload(uri: str, pool: str, source: Path) -> float:
    name = f"virsh-{uuid.uuid4().hex[:6]}.iso"
    size = source.stat().st_size
    base = ["virsh", "-q", "-c", uri]
    subprocess.run(
        [*base, "vol-create-as", pool, name, str(size), "--format", "raw"],
        check=True,
        capture_output=True,
    )
    started = time.perf_counter()
    subprocess.run(
        [*base, "vol-upload", "--pool", pool, name, str(source)], check=True, capture_output=True
    )
    seconds = time.perf_counter() - started
    subprocess.run([*base, "vol-delete", "--pool", pool, name], check=True, capture_output=True)
    return seconds


class _Web:
    """HTTP to daphne as the logged-in superuser (session cookie, CSRF token and header)."""

    def __init__(self, port: int, cookie: str) -> None:
        self.port = port
        token = secrets.token_hex(16)  # the CSRF cookie's secret; the header repeats it
        self.headers = {
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}; "
            f"{settings.CSRF_COOKIE_NAME}={token}",
            "X-CSRFToken": token,
        }

    def request(self, method: str, path: str, body=None, headers=None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data[:1] == b"{" else {}


def measure(user, env: dict[str, str], var_dir: Path, *, megabytes: int = 1024) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from iso_build import built_iso

    import hypervisor
    from portal.kernel.models import Job
    from portal.kernel.tasks import execute
    from storage.models import IsoImage

    uri = _libvirtd()
    source = built_iso(megabytes)
    size = source.stat().st_size
    directory = var_dir / "iso-pool"
    directory.mkdir(parents=True, exist_ok=True)
    domain = _domain(uri, user, directory)
    result = {"size": size}
    conn = hypervisor.connect(uri)
    daphne = Daphne(env, var_dir / "daphne-iso.log", REPO)
    try:
        result["virsh_s"] = _virsh_upload(uri, domain.pool_name, source)
        daphne.wait_ready()
        web = _Web(daphne.port, session_cookie(user))
        # Warm the web process up (imports, templates, a small chunked upload's code paths).
        web.request("GET", f"/storage/?selected={domain.pk}&pane=images")
        web.request("GET", f"/storage/domains/{domain.pk}/images/upload/")
        pid = daphne.proc.pid
        rss_before = _status_kib(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        form = f"name={source.name}&size={size}"
        state = web.request(
            "POST",
            f"/storage/domains/{domain.pk}/images/upload/",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        started = time.perf_counter()
        offset = 0
        with open(source, "rb") as data:
            while offset < size:
                piece = data.read(CHUNK)
                path = f"{state['chunk_url']}?offset={offset}&upload={state['upload_id']}"
                state = web.request(
                    "POST", path, body=piece, headers={"Content-Type": "application/octet-stream"}
                )
                offset = state["offset"]
        result["http_s"] = time.perf_counter() - started
        result["rss_before_kib"] = rss_before
        result["hwm_kib"] = _status_kib(pid, "VmHWM")
        job = state["job"]["id"]
        started = time.perf_counter()
        execute(job)
        result["job_s"] = time.perf_counter() - started
        finished = Job.objects.get(pk=job)
        if finished.status != "succeeded":
            raise RuntimeError(f"the upload job failed: {finished.error}")
        image = IsoImage.objects.get(domain=domain, name=source.name)
        volume = conn.get_volume(domain.pool_name, image.name)
        result["same_size"] = volume.capacity == size
        result["same_bytes"] = _sha(Path(volume.path)) == _sha(source)
        # virsh again, the file now in the page cache as the staged one was: its better time.
        result["virsh_first_s"] = result["virsh_s"]
        result["virsh_again_s"] = _virsh_upload(uri, domain.pool_name, source)
        result["virsh_s"] = min(result["virsh_s"], result["virsh_again_s"])
    finally:
        daphne.stop()
        try:
            conn.pool_remove(domain.pool_name, wipe=True, delete_target=False)
        except hypervisor.HypervisorError:
            pass
    mb = size / MiB
    result["virsh_mib_s"] = mb / result["virsh_s"]
    result["job_mib_s"] = mb / result["job_s"]
    result["http_mib_s"] = mb / result["http_s"]
    result["end_to_end_mib_s"] = mb / (result["http_s"] + result["job_s"])
    result["ratio"] = result["job_mib_s"] / result["virsh_mib_s"]
    result["growth_mib"] = (result["hwm_kib"] - result["rss_before_kib"]) / 1024
    return result


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()
