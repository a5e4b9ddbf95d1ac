import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the portal with its monitor and workers (what `make run` ends with)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers", type=int, default=4, help="RQ worker threads in the monitor process"
        )

    def handle(self, *args, port=8000, workers=4, **options):
        python = sys.executable
        env = {**os.environ, "VIREO_DEMO": "1"}
        bind = "127.0.0.1"  # the demo has a well-known password: never listen beyond this machine
        procs = [
            subprocess.Popen(
                [python, "-m", "daphne", "-b", bind, "-p", str(port), "portal.asgi:application"],
                cwd=settings.BASE_DIR,
                env=env,
            ),
            subprocess.Popen(
                [python, "manage.py", "demo_monitor", "--workers", str(workers)],
                cwd=settings.BASE_DIR,
                env=env,
            ),
        ]
        url = f"http://{bind}:{port}/"
        from vms.demo import DEMO_USERS

        users = "".join(
            f"    {name} / {name}: {what}\n" for name, (_r, _k, what) in DEMO_USERS.items()
        )
        self.stdout.write(
            "\n  Vireo is running at " + url + "\n"
            "  Log in as admin / admin (demo superuser), or as a delegated user:\n"
            + users
            + "  Processes: daphne (web + websockets), monitor with "
            + str(workers)
            + " worker thread(s).\n"
            "  Ctrl-C stops everything.\n"
        )
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(p.poll() is None for p in procs):
                time.sleep(0.5)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if not stopping:
            failed = [p.args[2] if len(p.args) > 2 else p.args for p in procs if p.returncode]
            self.stderr.write(f"A Vireo process stopped unexpectedly: {failed}")
            sys.exit(1)
