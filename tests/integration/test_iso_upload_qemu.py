"""Uploading an ISO through Vireo on the real private libvirtd: a >= 50 MiB ISO 9660 image
built with xorriso is staged in chunks, and the upload job streams it into a new volume of an
ISO domain's pool with libvirt's volume upload stream; the volume read back on the pool is the
same size and the same bytes. The pool is undefined afterwards (its directory is the test's)."""

import hashlib

import pytest
from factories import ClusterFactory, HostFactory
from iso_build import built_iso

import hypervisor
from portal.kernel.models import Job, JobStatus
from storage.choices import IsoImageStatus, StorageType
from storage.models import IsoImage, StorageDomain
from vms import domains, isos
from vms.choices import HostStatus

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture
def iso_domain(admin, libvirt_uri, conn, tmp_path, work, settings):
    settings.VIREO_UPLOAD_DIR = tmp_path / "uploads"
    cluster = ClusterFactory()
    HostFactory(cluster=cluster, uri=libvirt_uri, status=HostStatus.UP, name="qemu1")
    directory = tmp_path / "iso"
    directory.mkdir()
    domain = work(
        lambda: domains.storage_domain_create(
            user=admin,
            name="iso-it",
            data_center_id=cluster.data_center_id,
            domain_function="iso",
            storage_type=StorageType.LOCAL,
            path=str(directory),
        )
    )
    yield domain, directory
    for name in StorageDomain.objects.values_list("pool_name", flat=True):
        try:
            conn.pool_remove(name, wipe=False, delete_target=False)
        except hypervisor.HypervisorError:
            pass


def test_an_iso_of_64_mib_is_uploaded_into_the_pool(admin, iso_domain, conn, work):
    domain, directory = iso_domain
    source = built_iso(64)
    size = source.stat().st_size
    assert size >= 50 << 20
    image = isos.iso_upload_start(
        user=admin, domain_id=domain.pk, name=source.name, size_bytes=size
    )
    chunk, job = 8 << 20, None
    with open(source, "rb") as data:
        while image.uploaded_bytes < size:
            length = min(chunk, size - image.uploaded_bytes)
            image, job = work(
                lambda image=image, length=length: isos.iso_upload_chunk(
                    user=admin,
                    image_id=image.pk,
                    upload_id=str(image.upload_id),
                    offset=image.uploaded_bytes,
                    body=data,
                    length=length,
                )
            )
    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert IsoImage.objects.get(pk=image.pk).status == IsoImageStatus.OK
    volume = conn.get_volume(domain.pool_name, source.name)
    assert volume.capacity == size and volume.format == "iso"  # libvirt probes it as ISO 9660
    assert volume.path == str(directory / source.name)
    assert digest(volume.path) == digest(source)
