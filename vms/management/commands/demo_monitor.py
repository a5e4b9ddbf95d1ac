from vms.testhosts import TestHostMonitor

from .monitor import Command as MonitorCommand


class Command(MonitorCommand):
    help = (
        "The demo's monitor: writes its test hosts' node files from the inventory, then watches "
        "every host (with --workers, the jobs run in this process, beside the test hosts)."
    )

    monitor_class = TestHostMonitor

    def monitor_ready(self, monitor: TestHostMonitor) -> None:
        written = monitor.prepare()
        self.stdout.write(f"demo_monitor: {written} test host node file(s) written")
