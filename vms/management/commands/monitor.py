import signal

from django.core.management.base import BaseCommand

from portal.kernel.worker import start_thread_workers
from vms.monitor import Monitor


class Command(BaseCommand):
    help = (
        "Watch every host: libvirt lifecycle events, a periodic poll, and jobs whose worker died."
    )

    def add_arguments(self, parser):
        parser.add_argument("--poll", type=float, default=None, help="seconds between polls")
        parser.add_argument(
            "--workers",
            type=int,
            default=0,
            help="also run N RQ workers as threads of this process (needed for test:/// hosts, "
            "whose state lives in this process: the demo's demo_monitor)",
        )

    monitor_class = Monitor

    def monitor_ready(self, monitor: Monitor) -> None:
        """Before the monitor starts (the demo's command prepares its test hosts here)."""

    def handle(self, *args, poll=None, workers=0, **options):
        monitor = self.monitor_class(poll_seconds=poll)
        self.monitor_ready(monitor)
        signal.signal(signal.SIGTERM, lambda *a: monitor.stop.set())
        signal.signal(signal.SIGINT, lambda *a: monitor.stop.set())
        if workers:
            start_thread_workers(workers)
            self.stdout.write(f"monitor: {workers} worker thread(s) started")
        monitor.run()
