"""``run.json``: what a course run was (versions, parameters, times) and on which machine.

Run times mean little without the machine: :func:`machine_speed_reference` times a fixed NumPy
matrix product, so that the seconds of two runs on different computers can be compared (a machine
whose reference is twice as long will take roughly twice as long for the CPU-bound notebooks).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from lunglib._version import __version__
from lunglib.io.atomic import write_text_atomic

RUN_INFO = "run.json"
REFERENCE_SIZE = 1024
REFERENCE_REPEATS = 3
REFERENCE_TEXT = (f"median seconds of {REFERENCE_REPEATS} products of two {REFERENCE_SIZE}x"
                  f"{REFERENCE_SIZE} float64 matrices (NumPy)")
"""What :func:`machine_speed_reference` measures, in words for printouts and the report."""


def machine_speed_reference(size: int = REFERENCE_SIZE, repeats: int = REFERENCE_REPEATS) -> float:
    """Median seconds of ``repeats`` products of two fixed ``size`` x ``size`` float64 matrices.

    The matrices come from a fixed seed, so every machine multiplies the same numbers; NumPy's
    BLAS uses the cores it is allowed, as TensorFlow does on a CPU. One product first warms the
    library up and is not counted.
    """
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, size, size))
    a @ b
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_names() -> list[str]:
    """NVIDIA GPUs as ``nvidia-smi`` lists them; empty without one.

    Asked of the driver rather than TensorFlow, so that describing the machine does not load
    TensorFlow into the process that runs the notebooks.
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def describe_machine(reference_seconds: float | None = None) -> dict[str, object]:
    """Platform, CPU, usable cores, GPUs and the speed reference (measured when not given)."""
    return {
        "platform": platform.platform(terse=True),
        "cpu": cpu_name(),
        "cores": usable_cores(),
        "gpus": gpu_names(),
        "reference_seconds": round(machine_speed_reference() if reference_seconds is None
                                   else reference_seconds, 4),
        "reference": REFERENCE_TEXT,
    }


def now_iso() -> str:
    """The current local time as ISO 8601 with its UTC offset, to the second."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def collect_run_info(
    parameters: Mapping[str, object],
    dataset: str,
    seconds: Mapping[str, float],
    started: str,
    finished: str,
    machine: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """The ``run.json`` record of a run (the run-folder contract of issue #25)."""
    return {
        "lunglib_version": __version__,
        "tensorflow_version": _package_version("tensorflow"),
        "python_version": platform.python_version(),
        "started": started,
        "finished": finished,
        "seconds": dict(seconds),
        "parameters": dict(parameters),
        "dataset": dataset,
        "machine": dict(machine) if machine is not None else describe_machine(),
    }


def write_run_info(run_dir: str | os.PathLike, info: Mapping[str, object]) -> Path:
    """Write ``run_dir/run.json`` atomically (a reader never sees half a file)."""
    path = Path(run_dir) / RUN_INFO
    write_text_atomic(path, json.dumps(info, indent=2, default=str) + "\n")
    return path


def read_run_info(run_dir: str | os.PathLike) -> dict[str, object] | None:
    """``run_dir/run.json`` as a dict, or None when the run folder has none."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return None
    return json.loads(path.read_text())


__all__ = [
    "REFERENCE_TEXT",
    "RUN_INFO",
    "collect_run_info",
    "describe_machine",
    "machine_speed_reference",
    "read_run_info",
    "write_run_info",
]
