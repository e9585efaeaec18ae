"""Stopping the servers tests start (dagster dev, mlflow server) with everything they spawned."""

import os
import signal
import subprocess


def stop_process_group(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process's group (started with ``start_new_session=True``), then SIGKILL what is left after
    ``grace_s`` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
