"""manage.py iso_upload FILE --domain NAME [--guest-tools]: upload an ISO to an ISO domain from
a script (oVirt's engine-iso-uploader), through the same service and job as the browser's
Upload: the file is staged in chunks, then the upload job streams it into the pool."""

import os
import threading
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from portal.kernel.errors import ActionRefused
from portal.kernel.models import Job, JobStatus
from portal.kernel.tasks import execute
from storage.choices import DomainFunction
from storage.models import StorageDomain
from vms.isos import iso_upload_chunk, iso_upload_start


class Command(BaseCommand):
    help = "Upload an ISO image to an ISO storage domain (progress on stdout)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="the ISO file; its name becomes the image's name")
        parser.add_argument("--domain", required=True, help="the ISO storage domain's name")
        parser.add_argument("--data-center", help="the domain's data center, if names clash")
        parser.add_argument("--guest-tools", action="store_true", help="mark it as guest tools")
        parser.add_argument("--user", help="record the upload as this user's")

    def handle(self, *args, **options):
        path = options["file"]
        if not os.path.isfile(path):
            raise CommandError(f"{path}: no such file.")
        domain = self._domain(options["domain"], options.get("data_center"))
        user = self._user(options.get("user"))
        size = os.path.getsize(path)
        try:
            image = iso_upload_start(
                user=user,
                domain_id=domain.pk,
                name=os.path.basename(path),
                size_bytes=size,
                guest_tools=options["guest_tools"],
            )
            job = self._send(image, path, size, user)
        except ActionRefused as exc:
            raise CommandError(str(exc)) from None
        self._run(job)

    def _domain(self, name: str, data_center: str | None) -> StorageDomain:
        domains = StorageDomain.objects.filter(name=name, domain_function=DomainFunction.ISO)
        if data_center:
            domains = domains.filter(data_center__name=data_center)
        found = list(domains[:2])
        if not found:
            raise CommandError(f"No ISO storage domain is named {name}.")
        if len(found) > 1:
            raise CommandError(f"Several ISO domains are named {name}: give --data-center.")
        return found[0]

    def _user(self, username: str | None):
        if not username:
            return None
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user is named {username}.") from None

    def _send(self, image, path: str, size: int, user) -> Job:
        offset = image.uploaded_bytes
        if offset:
            self.stdout.write(f"Resuming {image.name} at {offset} bytes.")
        chunk = settings.VIREO_UPLOAD_CHUNK_BYTES
        with open(path, "rb") as source:
            source.seek(offset)
            job = None
            while offset < size:
                length = min(chunk, size - offset)
                image, job = iso_upload_chunk(
                    user=user,
                    image_id=image.pk,
                    upload_id=str(image.upload_id),
                    offset=offset,
                    body=source,
                    length=length,
                )
                offset = image.uploaded_bytes
                self.stdout.write(f"\rStaged {offset >> 20} of {size >> 20} MiB", ending="")
        self.stdout.write("")
        if job is None:
            raise CommandError(f"The upload of {image.name} did not complete.")
        return job

    def _run(self, job: Job) -> None:
        """Run the job here, printing its progress (a worker that took it first runs it
        instead, only one claims it: then wait for it), and report how it ended."""
        stop = threading.Event()
        printer = threading.Thread(target=self._print_progress, args=(job.pk, stop), daemon=True)
        printer.start()
        try:
            execute(job.pk)
            job.refresh_from_db()
            while job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                time.sleep(0.5)
                job.refresh_from_db()
        finally:
            stop.set()
            printer.join(2)
        if job.status == JobStatus.FAILED:
            raise CommandError(f"Upload failed: {job.error}")
        self.stdout.write(self.style.SUCCESS(f"Done: {job.description}."))

    def _print_progress(self, job_id: int, stop: threading.Event) -> None:
        shown = None
        try:
            while not stop.wait(0.5):
                row = Job.objects.filter(pk=job_id).values_list("progress", "step").first()
                line = f"{row[0]:3d}% {row[1]}" if row else None
                if line and line != shown:
                    self.stdout.write(line)
                    shown = line
        finally:
            close_old_connections()
