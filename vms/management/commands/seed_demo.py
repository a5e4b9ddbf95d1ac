from django.core.management.base import BaseCommand

from vms.demo import demo_seed


class Command(BaseCommand):
    help = "Create the demo data center (once) and the admin / admin superuser."

    def handle(self, *args, **options):
        made = demo_seed()
        self.stdout.write("Demo inventory created." if made else "Demo inventory already present.")
