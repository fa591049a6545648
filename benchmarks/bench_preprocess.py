"""How fast does ``lunglib.preprocess.prepare`` turn a real CT into the (32, 64, 64) model input?

On the same real scans (``../shared/data``: LIDC-IDRI-0001, 133x512x512 at 2.5 mm; both
Lung-PET-CT-Dx A0002 series, 30x512x512 at 8 mm), side by side:

decode   the floor: ``pydicom.dcmread`` + ``pixel_array`` of every file, nothing else;
load     ``lunglib.load_scan`` (decode, sort, HU, checks);
lunglib  ``prepare`` on the loaded scan: the scan block-averaged once to a ~2.5 mm working copy,
         that to ~5 mm for the lung mask, and only the lung box of the working copy resampled,
         once, to the output grid;
(a)      the widely copied Kaggle DSB2017 recipe: ``scipy.ndimage.zoom`` of the whole scan to
         1 mm (its default cubic spline), the Kaggle ``segment_lung_mask`` (threshold -320,
         background label, per-slice fill), then crop to the mask and zoom to the output;
(b)      the per-slice recipe: resize every slice to size x size, then average chunks of slices
         down to n_slices (no resampling in mm, no lung mask).

Wall-clock seconds are the minimum of the runs (the machine is shared); CPU seconds are this
process's user+system time (threads summed). Targets: lunglib >= 10x faster than (a), and
load+lunglib <= 1.5x decode. Peak memory: a 512x512x300 series (the LIDC volume stacked to 300
slices) is prepared in a fresh process, whose peak resident set size is reported (Python, NumPy,
SciPy and SimpleITK included). Target < 1.5 GB.

A last table splits ``prepare`` on LIDC-IDRI-0001 into its steps (CPU seconds, min of runs).

Usage: ``python benchmarks/bench_preprocess.py [--runs 3] [--skip-kaggle]``

Measured 2026-11-27 (PREPROCESS_VERSION 3, ``load_scan`` on one thread), 2 cores with one
other training job running (load average 1.3-1.7),
``.venv/bin/python benchmarks/bench_preprocess.py --runs 7``; CPU seconds, min of 7 runs:

==================  ======  ======  =======  ==========  ================  ==============
scan                decode  load    prepare  (a) Kaggle  (a) / prepare     (load+prep)/dec
==================  ======  ======  =======  ==========  ================  ==============
LIDC-IDRI-0001      0.21    0.28    0.09     32.7        374x (wall 381x)  1.73 (wall 1.78)
Lung_Dx B70f        0.07    0.08    0.06     17.4        313x (wall 302x)  1.94 (wall 1.95)
Lung_Dx B40f        0.07    0.09    0.04     18.7        469x (wall 483x)  1.81 (wall 1.64)
==================  ======  ======  =======  ==========  ================  ==============

A second run (2026-11-28, same code, ``--runs 9``, one other training job on the other core),
with the per-slice recipe (b) and prepared volumes per second (1 / prepare CPU seconds):

==================  ======  =====  =======  =====  ======  =========  =====  ================
scan                decode  load   prepare  vol/s  (a)     (b) per-   (a) /  (load+prep)/dec
                                                   Kaggle  slice      prep
==================  ======  =====  =======  =====  ======  =========  =====  ================
LIDC-IDRI-0001      0.13    0.23   0.08     12.4   30.7    1.07       380x   2.31 (wall 2.29)
Lung_Dx B70f        0.05    0.07   0.04     24.4   19.0    0.29       463x   2.38 (wall 2.35)
Lung_Dx B40f        0.06    0.08   0.05     20.7   19.6    0.29       406x   2.06 (wall 2.08)
==================  ======  =====  =======  =====  ======  =========  =====  ================

``prepare`` is 6-13x faster than the per-slice recipe (b), which neither resamples in mm nor masks
the lungs, and 380-463x faster than (a). The decode floor itself read faster in this run (0.13 s
against 0.21 s for LIDC-IDRI-0001; ``load_scan`` 0.23 s against 0.28 s), so the ratio to it moves
between runs on this shared machine: 1.7-2.4x over the two runs. Where ``load_scan`` spends its
time beyond the floor (one run timed part by part, CPU s for the 133 files): parsing and the
header fields 0.18 (the floor's ``dcmread`` alone 0.19 in the same run), pixels to HU 0.09 against
the floor's 0.06 for ``ds.pixel_array`` (pydicom's read-only view 0.036, the int16 HU arithmetic
0.022, the rescale and padding tags 0.007), sorting and checks 0.025.

Per step on LIDC-IDRI-0001 (first run; CPU s, x decode): load_scan 0.276 (1.31x);
block-average to the ~2.5 mm working copy 0.059 (0.28x); that to ~5 mm 0.005; segment_lungs on
the ~5 mm copy 0.020 (0.10x); crop + BinShrink + Resample of the lung box 0.012 (0.06x); lung
mask onto the output grid 0.005; ``prepare`` as a whole 0.098 (0.46x). Peak memory for the
300x512x512 series: 447 MiB (450 MiB in the second run).

Before/after this version (same command, same machine, the run before the change under a busier
load): ``prepare`` 0.206 -> 0.098 s CPU on LIDC-IDRI-0001 (segment_lungs on a ~2.5 mm copy
0.131 -> on a ~5 mm copy 0.020; the lung box is now cut from the working copy instead of the
full scan, 0.037 -> 0.012); ``load_scan`` 0.43 -> 0.28 s, from reading uncompressed pixel data as
read-only views (``pydicom.pixels.pixel_array(ds, view_only=True)``) instead of copies, and from
one reading thread instead of a pool (parsing holds the GIL: ``benchmarks/bench_load.py`` gives
1.0x the floor's CPU time with one thread, 1.8x with two). Version 3 lung masks come from a
~5 mm copy; on LIDC-IDRI-0001 the lung volume reads 3905 mL (3858 mL on the ~2.5 mm copy).

Those two runs timed each function ``runs`` times in a row. Since 2026-11-28 (second session)
decode, load and prepare run in turns, one of each per round (``timed_together``), so a busy
spell on the shared machine hits all three alike, and ``load_scan`` reads plain 16-bit pixels
with ``np.frombuffer`` instead of ``pydicom.pixels.pixel_array`` (whose option gathering cost
~0.3 ms per file, 0.03-0.04 s on LIDC-IDRI-0001) and its layout tags by number. Two runs of
``.venv/bin/python benchmarks/bench_preprocess.py --runs 15`` with two training jobs on the two
cores (load average ~2); CPU seconds, min of 15 rounds:

==================  ======  =====  =======  =====  ======  =====  =====  ================
scan                decode  load   prepare  vol/s  (a)     (b)    (a) /  (load+prep)/dec
                                                   Kaggle         prep
==================  ======  =====  =======  =====  ======  =====  =====  ================
run 1
LIDC-IDRI-0001      0.22    0.23   0.10     9.7    33.9    1.20   331x   1.51 (wall 1.51)
Lung_Dx B70f        0.05    0.05   0.03     30.1   19.8    0.26   595x   1.69 (wall 1.72)
Lung_Dx B40f        0.05    0.05   0.04     22.3   15.2    0.27   338x   2.05 (wall 1.79)
run 2
LIDC-IDRI-0001      0.14    0.25   0.07     14.0   31.7    1.15   443x   2.28 (wall 2.09)
Lung_Dx B70f        0.06    0.06   0.04     25.3   16.9    0.26   427x   1.77 (wall 1.58)
Lung_Dx B40f        0.05    0.05   0.04     28.2   18.1    0.27   511x   1.61 (wall 1.39)
==================  ======  =====  =======  =====  ======  =====  =====  ================

Per step on LIDC-IDRI-0001 (run 1 / run 2, CPU s): decode 0.218 / 0.143; load_scan 0.227 /
0.254 (1.04x / 1.78x); block-average to the working copy 0.036 / 0.060; segment_lungs 0.013 /
0.019; ``prepare`` as a whole 0.064 / 0.083 (0.29x / 0.58x). Peak memory 450 MiB.

**Target load+prepare <= 1.5x decode: not met** (1.5-2.3x over these two runs; 1.7-2.4x before).
The same code measures anywhere from 1.0x to 1.8x the floor for ``load_scan`` from one process to
the next: what moves is the operating system's cost of handing the process fresh memory (18 000
page faults the first time a 133-file scan is read whole, a few hundred later), not Python work.
In one process, away from that, ``load_scan`` costs the floor's ``dcmread`` (0.10-0.15 s) plus
~0.03 s of HU conversion and ~0.03 s of sorting and checks, against the floor's ~0.045 s of
``pixel_array``: about 1.0-1.25x the floor. ``prepare`` adds 0.3-0.6x, over half of it the one
pass over every voxel that block-averages the scan (``sitk.BinShrink``; numpy reshape-sums were
2-4x slower). Ruled out by measurement: ``dcmread(specific_tags=...)`` (no faster), reading the
pixel bytes at their file offset straight into the volume (0.150 s against 0.152 s for reading
whole), disabling Python's garbage collector (no change), SimpleITK's ``ImageSeriesReader``
(2.1x the floor, ``bench_load.py``). Meeting 1.5x reliably would take a DICOM parser faster than
pydicom, or a block-average fused into the decoding, for less than the run-to-run noise here.

A run on the idle machine (2026-11-29, load average below 0.6, ``--runs 15 --skip-kaggle``, 17 s
in all) reads faster throughout but not closer to the target: CPU seconds decode 0.11 / 0.04 /
0.04, load 0.16 / 0.04 / 0.04, prepare 0.07 / 0.03 / 0.04 (LIDC-IDRI-0001 / B70f / B40f);
load+prepare **2.18 / 2.03 / 2.00x** decode (wall 2.03 / 1.84 / 1.81x). On LIDC-IDRI-0001
``load_scan`` is 1.49x the floor (0.161 against 0.108 s), the block-average 0.41x (0.045 s), and
``prepare`` as a whole 0.87x in its own timing (0.094 s). The floor drops most when the machine
is idle (0.108 s against 0.14-0.22 s when shared), so the ratio rises. Peak memory 450 MiB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage
from skimage.transform import resize

from lunglib.io.dicom import load_scan
from lunglib.preprocess import steps as pp
from lunglib.preprocess.steps import prepare, window
from lunglib.settings import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PET = SHARED / "lung_pet_ct_dx" / "Lung-PET-CT-Dx" / "Lung_Dx-A0002"
CASES = {
    "LIDC-IDRI-0001": SHARED / "lidc_idri" / "LIDC-IDRI-0001",
    "Lung_Dx-A0002 B70f": next(PET.glob("*/*B70f*"), PET / "B70f"),
    "Lung_Dx-A0002 B40f": next(PET.glob("*/*B40f*"), PET / "B40f"),
}
SETTINGS = Settings(size=64, n_slices=32)


def decode_only(folder: Path) -> int:
    """The floor: read and decode every DICOM image under ``folder``."""
    n = 0
    for path in sorted(folder.rglob("*.dcm")):
        n += pydicom.dcmread(path).pixel_array.shape[0] > 0
    return n


# ---- (a) the Kaggle DSB2017 recipe (Guido Zuidhof's "Full Preprocessing Tutorial") ---------
def _largest_label_volume(im: np.ndarray, bg: int = -1) -> int | None:
    vals, counts = np.unique(im, return_counts=True)
    counts = counts[vals != bg]
    vals = vals[vals != bg]
    return int(vals[np.argmax(counts)]) if len(counts) else None


def kaggle_segment_lung_mask(image: np.ndarray, fill_lung_structures: bool = True) -> np.ndarray:
    from skimage import measure

    binary_image = np.array(image > -320, dtype=np.int8) + 1
    labels = measure.label(binary_image)
    background_label = labels[0, 0, 0]
    binary_image[background_label == labels] = 2
    if fill_lung_structures:
        for i, axial_slice in enumerate(binary_image):
            axial_slice = axial_slice - 1
            labeling = measure.label(axial_slice)
            l_max = _largest_label_volume(labeling, bg=0)
            if l_max is not None:
                binary_image[i][labeling != l_max] = 1
    binary_image -= 1
    binary_image = 1 - binary_image
    labels = measure.label(binary_image, background=0)
    l_max = _largest_label_volume(labels, bg=0)
    if l_max is not None:
        binary_image[labels != l_max] = 0
    return binary_image


def kaggle_recipe(hu: np.ndarray, spacing, shape=(32, 64, 64)) -> np.ndarray:
    new_shape = np.round(np.asarray(hu.shape) * np.asarray(spacing))
    image = ndimage.zoom(hu.astype(np.float32), new_shape / hu.shape, mode="nearest")
    mask = kaggle_segment_lung_mask(image)
    nz = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box = tuple(slice(i[0], i[-1] + 1) if i.size else slice(None) for i in nz)
    crop = image[box]
    out = ndimage.zoom(crop, np.asarray(shape) / crop.shape, order=1)
    return window(out)


# ---- (b) per-slice resize + chunk mean (the DSB2017 "sentdex" recipe) ------------------------
def per_slice_recipe(hu: np.ndarray, shape=(32, 64, 64)) -> np.ndarray:
    slices = [resize(s.astype(np.float32), shape[1:], preserve_range=True, anti_aliasing=True)
              for s in hu]
    chunks = np.array_split(np.arange(len(slices)), shape[0])
    if len(slices) < shape[0]:  # fewer slices than wanted: the recipe repeats slices
        chunks = np.array_split(np.repeat(np.arange(len(slices)), -(-shape[0] // len(slices))),
                                shape[0])
    return window(np.stack([np.mean([slices[i] for i in c], axis=0) for c in chunks]))


def timed(fn, runs: int) -> tuple[float, float, object]:
    walls, cpus, result = [], [], None
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), result


def timed_together(fns: dict[str, object], runs: int) -> dict[str, tuple[float, float, object]]:
    """``timed`` for several functions run in turns (one round = each function once), so that
    a busy spell on the shared machine hits all of them alike rather than one of them."""
    walls = {name: [] for name in fns}
    cpus = {name: [] for name in fns}
    results: dict[str, object] = {}
    for _ in range(runs):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            results[name] = fn()
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
    return {name: (min(walls[name]), min(cpus[name]), results[name]) for name in fns}


def prepare_steps(scan, runs: int) -> list[tuple[str, float]]:
    """CPU seconds (min of runs) of each step of ``prepare`` on one scan, the way it runs them."""
    import SimpleITK as sitk

    shape = (SETTINGS.n_slices, SETTINGS.size, SETTINGS.size)
    options = pp.PrepareOptions()
    geometry = pp._Geometry.of(scan)
    work_hu, work_geometry = pp._shrunk_copy(scan.hu, geometry, options.work_voxel_mm)
    small_hu, small_geometry = pp._shrunk_copy(work_hu, work_geometry, options.seg_voxel_mm)
    small = small_geometry.image(small_hu)
    spacing = small.GetSpacing()[::-1]
    lungs = pp.segment_lungs(small_hu, spacing, scan.direction)
    lo, hi = pp.lung_bbox(lungs)
    grid = pp.box_grid(small, lo, hi, shape, options.margin_mm, options.square)

    def box() -> np.ndarray:
        return pp._resample_array(*pp._cut_to_grid(work_hu, work_geometry, grid), grid,
                                  default=float(work_hu.min()))

    def lung_mask() -> np.ndarray:
        image = sitk.GetImageFromArray(lungs.astype(np.float32))
        image.CopyInformation(small)
        return sitk.GetArrayFromImage(grid.resample(image)) >= 0.5

    steps = [
        (f"block-average to the ~{options.work_voxel_mm:g} mm working copy",
         lambda: pp._shrunk_copy(scan.hu, geometry, options.work_voxel_mm)),
        (f"block-average that to ~{options.seg_voxel_mm:g} mm",
         lambda: pp._shrunk_copy(work_hu, work_geometry, options.seg_voxel_mm)),
        (f"segment_lungs on the ~{options.seg_voxel_mm:g} mm copy",
         lambda: pp.segment_lungs(small_hu, spacing, scan.direction)),
        ("crop + BinShrink + Resample of the lung box", box),
        ("lung mask onto the output grid", lung_mask),
        ("prepare() as a whole", lambda: prepare(scan, SETTINGS)),
    ]
    return [(name, timed(fn, runs)[1]) for name, fn in steps]


PEAK_SCRIPT = """
import sys, numpy as np
from lunglib.io.dicom import CTScan
from lunglib.preprocess.steps import prepare


def high_water_mib():
    # VmHWM starts afresh with each exec; ru_maxrss would carry over the parent's peak
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


hu = np.load(sys.argv[1], mmap_mode="r")
reps = -(-300 // hu.shape[0])
big = np.ascontiguousarray(np.concatenate([hu] * reps)[:300])
scan = CTScan(hu=big, spacing=(1.0, 0.703125, 0.703125), origin=(0.0, 0.0, 0.0),
              direction=np.eye(3), series_uid="1", patient_key="bench")
base = high_water_mib()
out = prepare(scan)
print(base, high_water_mib(), big.nbytes / 2**20)
"""


def peak_memory(hu: np.ndarray) -> tuple[float, float, float]:
    """(RSS before prepare, peak RSS, volume MB) in MiB for a 300x512x512 series."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hu.npy"
        np.save(path, hu)
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], check=True,
                             capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    before, peak, volume_mb = (float(v) for v in out.stdout.split()[-3:])
    return before, peak, volume_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-kaggle", action="store_true", help="skip the slow recipe (a)")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"{SHARED} not present: benchmark skipped", file=sys.stderr)
        return 0

    rows, lidc_scan = [], None
    for name, folder in CASES.items():
        if not folder.is_dir():
            print(f"{folder} missing: {name} skipped", file=sys.stderr)
            continue
        scan = load_scan(folder)
        together = timed_together({
            "decode": lambda f=folder: decode_only(f),
            "load": lambda f=folder: load_scan(f),
            "prepare": lambda s=scan: prepare(s, SETTINGS),
        }, args.runs)
        decode_w, decode_c, _ = together["decode"]
        load_w, load_c, _ = together["load"]
        prep_w, prep_c, prepared = together["prepare"]
        per_w, per_c, _ = timed(lambda s=scan: per_slice_recipe(s.hu), 1)
        if args.skip_kaggle:
            kag_w = kag_c = float("nan")
        else:
            kag_w, kag_c, _ = timed(lambda s=scan: kaggle_recipe(s.hu, s.spacing), 1)
        if name.startswith("LIDC"):
            lidc_scan = scan
        rows.append((name, scan.shape, decode_w, load_w, prep_w, kag_w, per_w,
                     decode_c, load_c, prep_c, kag_c, per_c, prepared.ok))

    print("\nPrepared volumes per second, (32, 64, 64) output -- wall clock (min of runs)")
    head = (f"{'scan':<20} {'shape':<15} {'decode s':>8} {'load s':>7} {'lunglib':>8} "
            f"{'vol/s':>6} {'(a) s':>7} {'(a) vol/s':>9} {'(b) s':>6} {'a/lunglib':>9} "
            f"{'(load+lunglib)/decode':>21}")
    print(head)
    print("-" * len(head))
    for r in rows:
        name, shape, dw, lw, pw, kw, bw = r[:7]
        print(f"{name:<20} {str(shape):<15} {dw:8.2f} {lw:7.2f} {pw:8.2f} {1 / pw:6.2f} "
              f"{kw:7.1f} {1 / kw:9.3f} {bw:6.2f} {kw / pw:9.1f} {(lw + pw) / dw:21.2f}")
    print("\nThe same in CPU seconds of this process (steadier on a shared machine)")
    print(head)
    print("-" * len(head))
    for r in rows:
        name, shape = r[:2]
        dc, lc, pc, kc, bc = r[7:12]
        print(f"{name:<20} {str(shape):<15} {dc:8.2f} {lc:7.2f} {pc:8.2f} {1 / pc:6.2f} "
              f"{kc:7.1f} {1 / kc:9.3f} {bc:6.2f} {kc / pc:9.1f} {(lc + pc) / dc:21.2f}")

    if lidc_scan is not None:
        decode_c = next(r[7] for r in rows if r[0].startswith("LIDC"))
        load_c = next(r[8] for r in rows if r[0].startswith("LIDC"))
        print(f"\nWhere the CPU time goes, LIDC-IDRI-0001 (min of {args.runs} runs)")
        print(f"{'step':<48} {'CPU s':>6} {'x decode':>8}")
        print(f"{'decode only (the floor)':<48} {decode_c:6.3f} {1.0:8.2f}")
        print(f"{'load_scan':<48} {load_c:6.3f} {load_c / decode_c:8.2f}")
        for step, cpu in prepare_steps(lidc_scan, args.runs):
            print(f"{step:<48} {cpu:6.3f} {cpu / decode_c:8.2f}")
        before, peak, volume_mb = peak_memory(lidc_scan.hu)
        print(f"\nPeak memory, prepare() on a 300x512x512 int16 series ({volume_mb:.0f} MiB): "
              f"RSS {before:.0f} MiB before, peak {peak:.0f} MiB "
              f"(target < 1536 MiB: {'met' if peak < 1536 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
