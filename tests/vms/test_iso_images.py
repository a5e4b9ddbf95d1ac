"""ISO domains' images (vms/isos.py, vms/iso_jobs.py, vms/iso_views.py, storage/isos.py) on
test-driver hosts: an upload staged in chunks and written to every host's pool by its job,
resumed after an interruption; refusals that change nothing (not an ISO, too big for the
domain, a taken or bad name, a chunk at the wrong offset, a race for one name); Remove, Mark
as Guest Tools; the monitor's images found in the pool; `manage.py iso_upload`; the Images
sub-tab and the upload endpoints four ways."""

import io
import json
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.urls import reverse
from factories import ClusterFactory, HostFactory, UserFactory, grant
from helpers import HX, GiB, MiB, html_find

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus
from storage.choices import IsoImageStatus, StorageType
from storage.isos import (
    ISO_MAGIC,
    ISO_MAGIC_OFFSET,
    chunk_append,
    image_name_check,
    staging_path,
)
from storage.models import IsoImage, StorageDomain, StorageDomainHost
from vms import domains, isos
from vms.monitor import storage_sync

pytestmark = pytest.mark.django_db


def iso_bytes(size: int, *, magic: bytes = ISO_MAGIC) -> bytes:
    """Bytes shaped like an ISO 9660 image: its volume descriptor's "CD001" at byte 32769."""
    data = bytearray(size)
    data[ISO_MAGIC_OFFSET : ISO_MAGIC_OFFSET + len(magic)] = magic
    for n in range(0, size, 4096):
        data[n] = n // 4096 % 251
    return bytes(data)


@pytest.fixture(autouse=True)
def _uploads(settings, tmp_path):
    settings.VIREO_UPLOAD_DIR = tmp_path / "uploads"
    settings.VIREO_UPLOAD_CHUNK_BYTES = 64 * 1024


@pytest.fixture
def site(admin, sync_hosts, work):
    """An Active Local on Host ISO domain on two Up test hosts."""
    cluster = ClusterFactory()
    hosts = [HostFactory(cluster=cluster, name=f"h{n}") for n in (1, 2)]
    sync_hosts(*hosts)
    domain = work(
        lambda: domains.storage_domain_create(
            user=admin,
            name="isos",
            data_center_id=cluster.data_center_id,
            domain_function="iso",
            storage_type=StorageType.LOCAL,
            path="/var/lib/vireo/isos",
        )
    )
    domain.refresh_from_db()
    return domain, hosts


def volumes(host, domain) -> dict[str, int]:
    conn = hypervisor.connect(host.uri)
    return {v.name: v.capacity for v in conn.list_volumes(domain.pool_name)}


def send(admin, image, data: bytes, chunk: int = 64 * 1024, until: int | None = None):
    """Send `data` in chunks from the image's staged offset (up to `until`); the last job."""
    job = None
    offset = image.uploaded_bytes
    end = len(data) if until is None else until
    while offset < end:
        piece = data[offset : min(offset + chunk, end)]
        image, job = isos.iso_upload_chunk(
            user=admin,
            image_id=image.pk,
            upload_id=str(image.upload_id),
            offset=offset,
            body=io.BytesIO(piece),
            length=len(piece),
        )
        offset = image.uploaded_bytes
    return image, job


def start(admin, domain, name="debian.iso", size=200 * 1024, **kw):
    return isos.iso_upload_start(user=admin, domain_id=domain.pk, name=name, size_bytes=size, **kw)


# -- Upload -----------------------------------------------------------------------------------


def test_an_upload_is_staged_in_chunks_then_written_to_every_hosts_pool(admin, site, work):
    domain, hosts = site
    data = iso_bytes(200 * 1024)
    image = start(admin, domain)
    assert image.status == IsoImageStatus.LOCKED and image.uploaded_by == admin
    image_upload_id = image.upload_id
    image, job = work(lambda: send(admin, image, data))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    image.refresh_from_db()
    assert (image.status, image.upload_id, image.size_bytes) == (IsoImageStatus.OK, None, len(data))
    assert all(volumes(h, domain)["debian.iso"] == len(data) for h in hosts)
    assert not staging_path(image_upload_id).exists()
    assert Event.objects.filter(action="upload_iso_image", phase="succeeded").exists()


def test_an_interrupted_upload_stays_locked_and_resumes_from_its_staged_bytes(admin, site, work):
    domain, hosts = site
    data = iso_bytes(300 * 1024)
    image = start(admin, domain, size=len(data))
    image, job = send(admin, image, data, until=128 * 1024)  # the browser went away here
    assert job is None and image.uploaded_bytes == 128 * 1024
    image.refresh_from_db()
    assert image.staging and image.staged_percent == 42  # shown "paused at 42% (resumable)"
    again = start(admin, domain, size=len(data))  # the same file again: resumed, not refused
    assert again.pk == image.pk and again.uploaded_bytes == 128 * 1024
    again, job = work(lambda: send(admin, again, data))
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    assert volumes(hosts[0], domain)["debian.iso"] == len(data)


def test_a_whole_staged_upload_whose_job_never_came_is_queued_when_started_again(admin, site, work):
    domain, hosts = site
    data = iso_bytes(100 * 1024)
    image = start(admin, domain, size=len(data))
    chunk_append(image, 0, io.BytesIO(data), len(data))  # staged, then the web process died
    again = work(lambda: start(admin, domain, size=len(data)))
    assert again.pk == image.pk
    assert IsoImage.objects.get(pk=image.pk).status == IsoImageStatus.OK
    assert volumes(hosts[0], domain)["debian.iso"] == len(data)


def test_an_image_being_removed_is_no_upload_to_resume(admin, site, work):
    domain, _hosts = site
    image = IsoImage.objects.create(domain=domain, name="debian.iso", size_bytes=200 * 1024)
    isos.iso_image_remove(user=admin, image_id=image.pk)  # queued, not run: Locked
    image.refresh_from_db()
    assert image.status == IsoImageStatus.LOCKED and not image.staging
    with pytest.raises(ActionRefused, match="Wait for it to end"):
        start(admin, domain)


def test_a_file_that_is_not_an_iso_is_refused_and_leaves_nothing(admin, site):
    domain, _hosts = site
    data = iso_bytes(100 * 1024, magic=b"NOTIT")
    image = start(admin, domain, name="fake.iso", size=len(data))
    with pytest.raises(ActionRefused, match="is not an ISO image"):
        send(admin, image, data)
    assert not IsoImage.objects.filter(domain=domain).exists()
    assert not staging_path(image.upload_id).exists()
    with pytest.raises(ActionRefused, match="must end with .iso"):
        start(admin, domain, name="notes.txt")


def test_an_upload_bigger_than_the_free_space_is_refused_before_the_transfer(admin, site):
    domain, _hosts = site
    StorageDomainHost.objects.filter(domain=domain, host__name="h2").update(free_bytes=GiB)
    with pytest.raises(ActionRefused, match="1.0 GiB free on host h2"):
        start(admin, domain, size=2 * GiB)
    assert not IsoImage.objects.exists()


def test_the_job_checks_the_space_again_and_takes_the_upload_away(admin, site, work):
    domain, hosts = site
    data = iso_bytes(100 * 1024)
    image = start(admin, domain, size=len(data))
    image, _job = send(admin, image, data, until=len(data) - 1024)
    StorageDomainHost.objects.filter(domain=domain).update(free_bytes=1024)  # filled meanwhile
    with pytest.raises(ActionRefused, match="free on host"):
        send(admin, image, data)
    assert not IsoImage.objects.exists() and not staging_path(image.upload_id).exists()
    assert all("debian.iso" not in volumes(h, domain) for h in hosts)


def test_a_failed_write_leaves_no_half_volume_on_any_host(admin, site, work, monkeypatch):
    domain, hosts = site
    data = iso_bytes(100 * 1024)
    image = start(admin, domain, size=len(data))
    real = hypervisor.TestDriverConnection._upload

    def dies_on_h2(self, vol, source, size, progress):
        if "h2" in self.uri:
            source.read(4096)
            raise hypervisor.HypervisorError("stream aborted: connection reset by peer")
        return real(self, vol, source, size, progress)

    monkeypatch.setattr(hypervisor.TestDriverConnection, "_upload", dies_on_h2)
    image, job = work(lambda: send(admin, image, data))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "connection reset" in job.error
    assert all("debian.iso" not in volumes(h, domain) for h in hosts)  # h1's copy taken back
    assert not IsoImage.objects.exists() and not staging_path(image.upload_id).exists()


def test_names_are_checked_strictly():
    assert image_name_check(" virtio-win-0.1.262.iso ") == "virtio-win-0.1.262.iso"
    for bad in ("../etc/passwd.iso", "a/b.iso", "x\x00.iso", "-rf.iso", "a" * 200 + ".iso", ""):
        with pytest.raises(ActionRefused):
            image_name_check(bad)


def test_a_name_is_taken_once(admin, site):
    domain, _hosts = site
    other = UserFactory(is_superuser=True)
    start(admin, domain)
    with pytest.raises(ActionRefused, match="by another user"):
        start(other, domain)
    IsoImage.objects.filter(domain=domain).update(status=IsoImageStatus.OK, upload_id=None)
    with pytest.raises(ActionRefused, match="already exists"):
        start(admin, domain)


@pytest.mark.django_db(transaction=True)
def test_two_uploads_of_one_name_at_once_one_wins(admin, site):
    domain, _hosts = site
    users = [admin, UserFactory(is_superuser=True)]
    barrier = threading.Barrier(2)
    outcomes = []

    def attempt(user) -> None:
        try:
            barrier.wait()
            outcomes.append(start(user, domain))
        except ActionRefused as exc:
            outcomes.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    made = [o for o in outcomes if isinstance(o, IsoImage)]
    refused = [o for o in outcomes if isinstance(o, str)]
    assert len(made) == 1 and len(refused) == 1, outcomes
    assert "debian.iso is" in refused[0] and "being uploaded" in refused[0]
    assert IsoImage.objects.filter(domain=domain).count() == 1


def test_a_chunk_at_the_wrong_offset_or_past_the_size_changes_nothing(admin, site):
    domain, _hosts = site
    data = iso_bytes(100 * 1024)
    image = start(admin, domain, size=len(data))
    image, _ = send(admin, image, data, until=64 * 1024)
    for offset, length in ((0, 1024), (64 * 1024, 64 * 1024)):
        with pytest.raises(ActionRefused):
            isos.iso_upload_chunk(
                user=admin,
                image_id=image.pk,
                upload_id=str(image.upload_id),
                offset=offset,
                body=io.BytesIO(b"x" * length),
                length=length,
            )
    assert staging_path(image.upload_id).stat().st_size == 64 * 1024
    with pytest.raises(ActionRefused, match="taken away"):
        isos.iso_upload_chunk(
            user=admin, image_id=image.pk, upload_id="x", offset=0, body=io.BytesIO(), length=1
        )


def test_abandoned_uploads_expire_at_the_next_upload(admin, site, settings):
    domain, _hosts = site
    image = start(admin, domain, name="old.iso")
    settings.VIREO_UPLOAD_EXPIRY_HOURS = 0
    start(admin, domain, name="new.iso")
    assert list(IsoImage.objects.values_list("name", flat=True)) == ["new.iso"]
    assert not staging_path(image.upload_id).exists()


# -- Remove, Mark as Guest Tools ---------------------------------------------------------------


def test_remove_deletes_the_volume_on_every_host_then_the_row(admin, site, work):
    domain, hosts = site
    data = iso_bytes(64 * 1024)
    image, _job = work(lambda: send(admin, start(admin, domain, size=len(data)), data))
    job = work(lambda: isos.iso_image_remove(user=admin, image_id=image.pk))
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    assert not IsoImage.objects.exists()
    assert all("debian.iso" not in volumes(h, domain) for h in hosts)


def test_mark_and_unmark_guest_tools(admin, site):
    domain, _hosts = site
    image = IsoImage.objects.create(domain=domain, name="tools.iso", size_bytes=MiB)
    isos.iso_image_guest_tools(user=admin, image_id=image.pk, guest_tools=True)
    assert IsoImage.objects.get(pk=image.pk).guest_tools
    with pytest.raises(ActionRefused, match="already"):
        isos.iso_image_guest_tools(user=admin, image_id=image.pk, guest_tools=True)
    isos.iso_image_guest_tools(user=admin, image_id=image.pk, guest_tools=False)
    assert not IsoImage.objects.get(pk=image.pk).guest_tools


# -- the monitor --------------------------------------------------------------------------------


def test_the_monitor_records_isos_copied_into_the_pool_and_drops_gone_ones(site):
    domain, hosts = site
    only = hosts[0]
    StorageDomainHost.objects.filter(domain=domain).exclude(host=only).delete()
    conn = hypervisor.connect(only.uri)
    conn.create_volume(domain.pool_name, "virtio-win-0.1.262.iso", 600 * MiB, preallocate=True)
    conn.create_volume(domain.pool_name, "notes.qcow2", MiB, preallocate=False)
    IsoImage.objects.create(domain=domain, name="gone.iso", size_bytes=MiB)
    storage_sync(only, conn)
    images = {i.name: (i.size_bytes, i.guest_tools) for i in IsoImage.objects.filter(domain=domain)}
    assert images == {"virtio-win-0.1.262.iso": (600 * MiB, True)}


# -- manage.py iso_upload -----------------------------------------------------------------------


def test_the_iso_upload_command_uploads_through_the_same_job(admin, site, tmp_path, capsys):
    domain, hosts = site
    path = tmp_path / "netinst.iso"
    path.write_bytes(iso_bytes(150 * 1024))
    call_command("iso_upload", str(path), "--domain", domain.name, "--guest-tools")
    image = IsoImage.objects.get(domain=domain)
    assert (image.name, image.status, image.guest_tools) == ("netinst.iso", "ok", True)
    assert all(volumes(h, domain)["netinst.iso"] == 150 * 1024 for h in hosts)
    assert "Done: Uploading netinst.iso" in capsys.readouterr().out
    with pytest.raises(CommandError, match="already exists"):
        call_command("iso_upload", str(path), "--domain", domain.name)
    with pytest.raises(CommandError, match="No ISO storage domain"):
        call_command("iso_upload", str(path), "--domain", "nope")
    fake = tmp_path / "fake.iso"
    fake.write_bytes(iso_bytes(100 * 1024, magic=b"NOTIT"))
    with pytest.raises(CommandError, match="fake.iso is not an ISO image"):
        call_command("iso_upload", str(fake), "--domain", domain.name)
    assert list(IsoImage.objects.values_list("name", flat=True)) == ["netinst.iso"]


# -- views ---------------------------------------------------------------------------------------


def test_the_images_sub_tab_lists_images_with_their_actions(
    admin_client, site, django_assert_max_num_queries
):
    domain, _hosts = site
    IsoImage.objects.create(domain=domain, name="b.iso", size_bytes=MiB)
    tools = IsoImage.objects.create(
        domain=domain, name="virtio-win.iso", size_bytes=MiB, guest_tools=True
    )
    url = reverse("storage:domains") + f"?selected={domain.pk}&pane=images&image={tools.pk}"
    with django_assert_max_num_queries(40):
        response = admin_client.get(url, headers=HX)
    names = [r.get("data-image") for r in html_find(response, "#iso-images tr.image-row")]
    assert names == ["virtio-win.iso", "b.iso"]  # guest tools first
    buttons = {
        b.text_content().strip(): b.get("disabled")
        for b in html_find(response, "#image-toolbar button")
    }
    assert buttons == {"Upload": None, "Remove": None, "Unmark Guest Tools": None}
    StorageDomain.objects.filter(pk=domain.pk).update(status="maintenance")
    response = admin_client.get(url, headers=HX)
    upload = html_find(response, "#image-toolbar button")[0]
    assert upload.text_content().strip() == "Upload" and upload.get("disabled") is not None


def test_an_interrupted_upload_is_shown_paused_and_resumable(admin, admin_client, site):
    domain, _hosts = site
    data = iso_bytes(300 * 1024)
    image, _job = send(admin, start(admin, domain, size=len(data)), data, until=128 * 1024)
    url = reverse("storage:domains") + f"?selected={domain.pk}&pane=images"
    row = html_find(admin_client.get(url, headers=HX), "#iso-images tr.image-row")[0]
    assert "Upload paused at 42% (resumable)" in " ".join(row.text_content().split())


def test_the_upload_endpoints_stage_chunks_and_queue_the_job(admin_client, site, work):
    domain, hosts = site
    data = iso_bytes(100 * 1024)
    url = reverse("storage:image_upload", args=[domain.pk])
    assert admin_client.get(url, headers=HX).status_code == 200
    state = admin_client.post(url, {"name": "web.iso", "size": len(data)}).json()
    assert state["offset"] == 0
    offset = 0
    while offset < len(data):
        piece = data[offset : offset + 64 * 1024]
        chunk = f"{state['chunk_url']}?offset={offset}&upload={state['upload_id']}"
        response = work(
            lambda chunk=chunk, piece=piece: admin_client.post(
                chunk, piece, content_type="application/octet-stream"
            )
        )
        assert response.status_code == 200, response.content
        state = response.json()
        offset = state["offset"]
    state = admin_client.get(state["state_url"]).json()
    assert state["status"] == "ok"
    assert volumes(hosts[1], domain)["web.iso"] == len(data)
    refused = admin_client.post(url, {"name": "web.iso", "size": len(data)})
    assert refused.status_code == 400 and "already exists" in json.loads(refused.content)["error"]


def test_a_user_without_manage_images_gets_404(client, site):
    domain, _hosts = site
    image = IsoImage.objects.create(domain=domain, name="a.iso", size_bytes=MiB)
    viewer = UserFactory()
    grant(
        viewer,
        "StorageAdmin",
        StorageDomain.objects.create(
            name="other", data_center=domain.data_center, domain_function="iso", pool_name="other"
        ),
    )
    client.force_login(viewer)
    assert client.get(reverse("storage:image_upload", args=[domain.pk])).status_code == 404
    assert client.get(reverse("storage:image_state", args=[image.pk])).status_code == 404
    chunk = reverse("storage:image_chunk", args=[image.pk]) + "?offset=0&upload=x"
    assert client.post(chunk, b"x", content_type="application/octet-stream").status_code == 404
    grant(viewer, "StorageAdmin", domain)
    assert client.get(reverse("storage:image_upload", args=[domain.pk])).status_code == 200
