"""How fast does ``lunglib.preprocess.prepare`` turn a real CT into the (32, 64, 64) model input?

On the real scans in ``../shared/data`` (LIDC-IDRI-0001 and both Lung-PET-CT-Dx A0002 series),
seconds per scan (the minimum over ``--runs``; CPU seconds are this process's user + system time):

decode   the floor: ``pydicom.dcmread`` + ``pixel_array`` of every file, nothing else;
load     ``lunglib.load_scan`` (decode, sort, HU, checks);
prepare  ``lunglib.preprocess.prepare`` on the loaded scan;
(a)      the widely copied Kaggle DSB2017 recipe: ``scipy.ndimage.zoom`` of the whole scan to
         1 mm, the Kaggle ``segment_lung_mask``, then crop to the mask and zoom to the output;
(b)      the per-slice recipe: resize every slice, then average chunks of slices to n_slices.

decode, load and prepare run in turns (one of each per round), so a busy spell on a shared machine
hits all three alike. Then, on LIDC-IDRI-0001: the CPU seconds of the steps inside ``prepare``,
and the peak resident memory of a fresh process that prepares a 300x512x512 series.

Usage: ``python benchmarks/bench_preprocess.py [--runs 3] [--skip-kaggle]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
from scipy import ndimage
from skimage import measure
from skimage.transform import resize

from lunglib.io import load_scan
from lunglib.preprocess import mask_bbox, prepare, window
from lunglib.preprocess import volume as prepare_module
from lunglib.settings import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PET = SHARED / "lung_pet_ct_dx" / "Lung-PET-CT-Dx" / "Lung_Dx-A0002"
CASES = {
    "LIDC-IDRI-0001": SHARED / "lidc_idri" / "LIDC-IDRI-0001",
    "Lung_Dx-A0002 B70f": next(PET.glob("*/*B70f*"), PET / "B70f"),
    "Lung_Dx-A0002 B40f": next(PET.glob("*/*B40f*"), PET / "B40f"),
}
SETTINGS = Settings(size=64, n_slices=32)
SHAPE = (SETTINGS.n_slices, SETTINGS.size, SETTINGS.size)
# The steps of prepare that are timed, as the functions it calls (in call order when repeated).
STEPS = {
    "_shrunk_copy": ["block-average to the working copy", "block-average that to the seg. copy"],
    "segment_lungs": ["segment_lungs on the segmentation copy"],
    "_resample_array": ["resample the lung box of the working copy"],
    "prepare": ["prepare() as a whole"],
}


def decode_only(folder: Path) -> int:
    """The floor: read and decode every DICOM image under ``folder``."""
    return sum(pydicom.dcmread(p).pixel_array.size > 0 for p in sorted(folder.rglob("*.dcm")))


def kaggle_lung_mask(image: np.ndarray) -> np.ndarray:
    """``segment_lung_mask(image, fill_lung_structures=True)`` of the Kaggle DSB2017 tutorial."""
    def largest(labels: np.ndarray, bg: int) -> int | None:
        vals, counts = np.unique(labels, return_counts=True)
        keep = vals != bg
        return int(vals[keep][np.argmax(counts[keep])]) if keep.any() else None

    binary = np.array(image > -320, dtype=np.int8) + 1
    labels = measure.label(binary)
    binary[labels == labels[0, 0, 0]] = 2
    for i, axial in enumerate(binary):
        labeling = measure.label(axial - 1)
        l_max = largest(labeling, 0)
        if l_max is not None:
            binary[i][labeling != l_max] = 1
    binary = 1 - (binary - 1)
    labels = measure.label(binary, background=0)
    l_max = largest(labels, 0)
    if l_max is not None:
        binary[labels != l_max] = 0
    return binary


def kaggle_recipe(hu: np.ndarray, spacing) -> np.ndarray:
    """(a): the whole scan to 1 mm (cubic spline), lung mask, crop, zoom to the output."""
    new_shape = np.round(np.asarray(hu.shape) * np.asarray(spacing))
    image = ndimage.zoom(hu.astype(np.float32), new_shape / hu.shape, mode="nearest")
    box = mask_bbox(kaggle_lung_mask(image))
    crop = image if box is None else image[box]
    return window(ndimage.zoom(crop, np.asarray(SHAPE) / crop.shape, order=1))


def per_slice_recipe(hu: np.ndarray) -> np.ndarray:
    """(b): every slice resized, chunks of slices averaged (slices repeated when too few)."""
    slices = [resize(s.astype(np.float32), SHAPE[1:], preserve_range=True, anti_aliasing=True)
              for s in hu]
    order = np.repeat(np.arange(len(slices)), -(-SHAPE[0] // len(slices)))
    chunks = np.array_split(order if len(slices) < SHAPE[0] else np.arange(len(slices)), SHAPE[0])
    return window(np.stack([np.mean([slices[i] for i in c], axis=0) for c in chunks]))


def timed_in_turns(
    fns: dict[str, Callable[[], object]], runs: int
) -> dict[str, tuple[float, float]]:
    """(min wall s, min CPU s) of each function, run in turns: one round calls each once."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return {name: (min(w for w, _ in t), min(c for _, c in t)) for name, t in times.items()}


def prepare_steps(scan, runs: int) -> list[tuple[str, float]]:
    """CPU seconds (min of runs) of the steps inside ``prepare``, timed by wrapping the
    functions it calls, so that the steps run exactly as ``prepare`` runs them."""
    calls: list[tuple[str, float]] = []

    def timing(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            c0 = time.process_time()
            result = fn(*args, **kwargs)
            calls.append((name, time.process_time() - c0))
            return result
        return wrapper

    best: dict[str, float] = {}
    wrappers = {name: timing(name, getattr(prepare_module, name)) for name in STEPS}
    for _ in range(runs):
        calls.clear()
        with mock.patch.multiple(prepare_module, **wrappers):
            prepare_module.prepare(scan, SETTINGS)
        seen = {name: 0 for name in STEPS}
        for name, cpu in calls:
            label = STEPS[name][min(seen[name], len(STEPS[name]) - 1)]
            seen[name] += 1
            best[label] = min(best.get(label, np.inf), cpu)
    return list(best.items())


PEAK_SCRIPT = """
import sys, numpy as np
from lunglib.io import CTScan
from lunglib.preprocess import prepare

def high_water_mib():  # VmHWM starts afresh with each exec
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if "VmHWM" in l)
hu = np.load(sys.argv[1], mmap_mode="r")
big = np.ascontiguousarray(np.concatenate([hu] * -(-300 // hu.shape[0]))[:300])
scan = CTScan(hu=big, spacing=(1.0, 0.703125, 0.703125), origin=(0.0, 0.0, 0.0),
              direction=np.eye(3), series_uid="1", patient_key="bench")
before = high_water_mib()
prepare(scan)
print(before, high_water_mib(), big.nbytes / 2**20)
"""


def peak_memory(hu: np.ndarray) -> tuple[float, float, float]:
    """(MiB resident before ``prepare``, peak MiB, MiB of the volume) for a 300-slice series."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hu.npy"
        np.save(path, hu)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], check=True,
                             capture_output=True, text=True, env=env).stdout
    return tuple(float(v) for v in out.split()[-3:])  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-kaggle", action="store_true", help="skip the slow recipe (a)")
    args = parser.parse_args(argv)
    rows, lidc = [], None
    for name, folder in CASES.items():
        if not folder.is_dir():
            print(f"{folder} missing: {name} skipped", file=sys.stderr)
            continue
        scan = load_scan(folder)
        lidc = scan if name.startswith("LIDC") else lidc
        t = timed_in_turns({"decode": lambda f=folder: decode_only(f),
                            "load": lambda f=folder: load_scan(f),
                            "prepare": lambda s=scan: prepare(s, SETTINGS)}, args.runs)
        recipes = {"(a)": lambda s=scan: kaggle_recipe(s.hu, s.spacing),
                   "(b)": lambda s=scan: per_slice_recipe(s.hu)}
        if args.skip_kaggle:
            recipes.pop("(a)")
        t = {"(a)": (np.nan, np.nan), **t, **timed_in_turns(recipes, 1)}
        rows.append((name, scan.shape, t))
    head = (f"{'scan':<20} {'shape':<15} {'decode':>7} {'load':>6} {'prepare':>8} {'vol/s':>6} "
            f"{'(a)':>6} {'(b)':>6} {'(a)/prepare':>11} {'(load+prepare)/decode':>21}")
    for kind, col in (("wall-clock", 0), ("CPU", 1)):
        print(f"\nSeconds per scan, {kind} (min of {args.runs} runs), {SHAPE} output")
        print(head + "\n" + "-" * len(head))
        for name, shape, t in rows:
            d, ld, p, a, b = (t[k][col] for k in ("decode", "load", "prepare", "(a)", "(b)"))
            print(f"{name:<20} {str(shape):<15} {d:7.3f} {ld:6.3f} {p:8.3f} {1 / p:6.1f} "
                  f"{a:6.1f} {b:6.2f} {a / p:11.0f} {(ld + p) / d:21.2f}")
    if lidc is not None:
        print(f"\nSteps inside prepare() on LIDC-IDRI-0001, CPU s (min of {args.runs} runs)")
        for step, cpu in prepare_steps(lidc, args.runs):
            print(f"  {step:<44} {cpu:6.3f}")
        before, peak, volume_mib = peak_memory(lidc.hu)
        print(f"\nprepare() of a 300x512x512 int16 series ({volume_mib:.0f} MiB) in a fresh "
              f"process: resident {before:.0f} MiB before, peak {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
