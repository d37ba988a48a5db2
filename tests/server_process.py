"""Run `promptblame serve` as a real subprocess on a loopback port (crash and CLI tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = [sys.executable, "-m", "promptblame.api.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTBLAME_")}
    env.update(PROMPTBLAME_DATA_DIR=str(data_dir), PROMPTBLAME_LOG_LEVEL="WARNING", **extra)
    return env


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env_for(data_dir), capture_output=True, text=True, timeout=120
    )


def start_server(data_dir: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    """`env`: extra variables for the server, e.g. PROMPTBLAME_RATE_LIMIT_PER_SECOND="5"."""
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env_for(data_dir, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become healthy in 60 s")
