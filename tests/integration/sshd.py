"""A private sshd on loopback for the integration suite: its own host key, one client key
authorized for the user running the tests, no password logins. Started per test, stopped
after."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateSshd:
    """sshd -f <its own config> on 127.0.0.1:<port>; `key` is the client's private key."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = _free_port()
        self.key = base / "client_key"
        self.process: subprocess.Popen | None = None

    def start(self) -> PrivateSshd:
        for name in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.base / name)],
                check=True,
            )
        shutil.copy(self.base / "client_key.pub", self.base / "authorized_keys")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # its privilege separation dir
        config = self.base / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.base / 'host_key'}\n"
            f"PidFile {self.base / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.base / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "AllowTcpForwarding yes\n"
        )
        self.process = subprocess.Popen(
            [str(SSHD), "-D", "-f", str(config), "-E", str(self.base / "sshd.log")]
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    log = (self.base / "sshd.log").read_text()
                    raise RuntimeError(f"sshd did not listen: {log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
