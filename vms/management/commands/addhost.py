from django.core.management.base import BaseCommand, CommandError

from portal.kernel.errors import ActionRefused
from vms.models import Cluster
from vms.services import host_add


class Command(BaseCommand):
    help = "Add a host by its libvirt URI (qemu:///system, qemu+ssh://root@host/system, ...)."

    def add_arguments(self, parser):
        parser.add_argument("uri")
        parser.add_argument("--name", help="defaults to the URI's host part")
        parser.add_argument("--cluster", default="Default", help="cluster name (default: Default)")

    def handle(self, *args, uri, name=None, cluster="Default", **options):
        target = Cluster.objects.filter(name=cluster).first()
        if target is None:
            raise CommandError(f"No cluster named {cluster!r}.")
        if not name:
            rest = uri.split("://", 1)[-1]
            name = (rest.split("/", 1)[0].split("@")[-1] or "localhost").replace(":", "-")
        try:
            # The operator on this machine is trusted with any libvirt URI (see vms.host_address).
            host = host_add(user=None, name=name, uri=uri, cluster_id=target.pk, trusted=True)
        except ActionRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Host {host.name} added to cluster {target.name}; the monitor connects to it shortly."
        )
