"""Start `brivl studio` as a user would (a separate process on 127.0.0.1) for the studio tests and the load bench."""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def studio(models: list[str], *extra: str, timeout: float = 600, threads: int = 1, env: dict | None = None,
           log_path: str | Path | None = None):
    """Run the studio on a free port until the block ends; yields its URL. Its log (stdout and stderr) goes to
    log_path, else $BRIVL_STUDIO_LOG, else nowhere."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", **(env or {})}
    named = [a for m in models for a in ("--model", m)]
    cmd = [sys.executable, "-m", "brivl.cli", "studio", "--port", str(port), *named, *extra]
    log = open(log_path or os.environ.get("BRIVL_STUDIO_LOG", os.devnull), "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the studio exited with status {proc.returncode} before serving ({' '.join(cmd)})")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the studio did not answer on {url} within {timeout} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
