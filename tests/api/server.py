"""A real uvicorn server on loopback, for tests and benchmarks that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`uvicorn service.app:app` in a child process, with the given AEGRADE_* environment."""

    def __init__(
        self, env: dict[str, str], *, port: int | None = None, log_file: Path | None = None, access_log: bool = False
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.log_file = log_file
        self.access_log = access_log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Server:
        command = [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--log-level", "info"] if self.access_log else ["--log-level", "warning", "--no-access-log"]
        output = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env,
            stdout=output or subprocess.DEVNULL,
            stderr=output or subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                detail = self.process.stderr.read().decode()[-2000:] if self.process.stderr else str(self.log_file)
                raise RuntimeError(f"server exited: {detail}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
