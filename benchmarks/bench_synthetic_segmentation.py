"""2.5D U-Net nodule segmentation on the synthetic cohort: Dice per patient, global, per nodule.

The notebook-06 recipe with a larger budget: patients of the default synthetic cohort split by
patient (``lunglib.evaluation.patient_split``, 15 % validation, 20 % test, stratified by the cancer
label, seed 42); a 2D U-Net on axial ``patch`` x ``patch`` patches that carry ``context``
slices on each side as channels (2.5D), taken about ``context_mm`` apart whatever the slice
thickness (``lunglib.inference.segment.context_step_for``); positive patches on nodules, negative
patches half on random lung voxels and half on bright lung voxels away from the nodules
(vessels, ``hard_fraction``); per-slice whole-scan inference restricted to the lungs; threshold
and minimum candidate volume chosen on the validation patients by mean whole-scan Dice
(``lunglib.evaluation.segmentation.choose_postprocessing``); the test patients scored once.

Three levels, reported separately (``lunglib.evaluation.segmentation``):

- **whole scan, per patient**: Dice of the predicted mask against all nodules of the patient's
  scan, every false-positive voxel anywhere in the lungs counting; a patient without nodules
  scores 1 if nothing is predicted and 0 otherwise. Mean over test patients.
- **whole scan, global**: the same masks, intersections and sizes pooled over all voxels of the
  test scans before the ratio (``dice_global``; LiTS's "Dice global"): every voxel weighs the
  same, so large nodules dominate.
- **per nodule**: Dice inside each true nodule's bounding box grown by (2, 8, 8) voxels, against
  that nodule's own voxels (``score_nodules``) -- how well a nodule is outlined, false positives
  elsewhere ignored (the level of patch benchmarks such as LIDC). Mean over test nodules, also
  split by nodule size.

Then ``error_breakdown`` summed over the test patients: missed-nodule voxels, outline voxels and
false-candidate voxels, and the global Dice without each. ``--dice-bound`` prints instead what an
outline one voxel off scores on a small nodule at 3 x 2.65 x 2.65 mm (a 7 mm nodule: 0.93 with
one extra voxel, 0.42 shifted by one voxel; see docs/synthetic.md).

Options, each chosen on the validation patients only: ``--tta`` also scores the probability maps
averaged with their left-right mirror (``predict_volume(flip=True)``); ``--hard-round`` runs
the first model over the *training* scans, cuts ``--n-hard`` patches per patient where it fires
off the nodules (``false_positive_patches``) and fine-tunes ``--hard-epochs``
more epochs on all patches plus these; ``--min-peaks`` adds a minimum peak probability per
candidate to the post-processing grid (``candidate_mask(min_peak=...)``); ``--augment`` gives
every training patch and its mask one of the 8 in-plane rotations/mirrorings, drawn afresh each
epoch (``lunglib.augment.dihedral_patches``; no extra patches, so no extra training time);
``--thresholds`` sets the threshold grid. Every variant (round 1 or 2, with or without flips)
gets its own post-processing chosen on validation; the variant with the best validation Dice is
the one reported in full; the test patients are scored once per variant, and all are printed so
nothing is hidden. The per-nodule table gives each test nodule's highest probability
(``peak_prob``: below the threshold, a miss is the model's; above it, the post-processing's).
``--save-maps DIR`` writes every variant's probability map of each validation and test patient
(float16 npz, ``DIR/<variant>/<patient>.npz``) for diagnosis without a rerun; keep DIR out of
the repository.

``--members K`` trains K models (seeds ``--seed``, ``--seed`` + 1, ...) on the same split, each
with the whole recipe (round 2 mined from its own false positives), and scores the mean of their
probability maps; each model alone is printed too (its own choices on validation), for the
spread between seeds, but only the ensemble's variants compete for the choice.

Seed ensembles (2026-11-29, session 11; ``--members 3 --tta --hard-round --augment --min-peaks
0 0.5 0.8 0.95 0.99``, one TensorFlow thread each, two or three runs at once on the two cores;
"alone" = each model's own validation-chosen variant, test per patient):

    split              test  ensemble's choice  per patient  global  each model alone
    whole cohort, s42   16   r2 + flip 0.3/0/0.5   0.874     0.927   0.802 0.876 0.853
    whole cohort, s7    16   r1 + flip 0.5/0/0.99  0.882     0.869   0.866 0.927 0.857
    40 patients, s42     8   r2 + flip 0.3/0/0.8   0.780     0.906   0.760 0.916 0.723
    40 patients, s7      8   r2 + flip 0.7/0/0     0.614     0.806   0.670 0.647 0.620

(test Dice; r1, r2 = round 1, 2, then threshold / min volume mm3 / min peak; "each model alone"
is the test per-patient Dice of each member's own validation-chosen variant. Training and round
2 of the three models took 31.7, 34.4, 16.2 and 16.7 min in the four runs; 51, 54, 27 and 31 min
in all, the seed-7 whole-cohort run beside a clean-clone ``make test``.)

**On the whole cohort (52 training, 12 validation, 16 test patients) the 0.85 target is met on
both splits measured, per patient and globally: 0.874 / 0.927 (seed 42) and 0.882 / 0.869
(seed 7)**, each variant and its post-processing chosen on validation; the six models alone
score 0.802-0.927 per patient (mean 0.864, five of six at 0.85 or more), so the ensemble mostly
buys steadiness. Per nodule it is not met (0.781 and 0.686): on seed 7 the chosen variant (round
1 + flip, validation 0.880 against 0.879 for round 2, which would have scored 0.958 / 0.948)
demands a minimum peak of 0.99 and drops three large nodules that peak at 0.67-0.94 (two in one
patient, who scores 0.126), and half the nodules of 3-7 voxels (7 of 14 on the two splits) are
missed.

On the 40-patient subsets (26 training, 6 validation, 8 test patients) it is not met: on seed
42 a healthy test scan scores 0 on one 165-voxel false component at the hilum (a thick vessel
trunk running through the slices, a round blob on every slice, peak probability 0.82 against
the chosen minimum peak 0.8); on seed 7 -- 8 test patients, none healthy, 11 of 15 nodules under
1000 mm3 -- the six validation patients score every variant 0.810-0.816, validation picks
threshold 0.7, and the test nodules are under-outlined (1234 outline voxels missed; per nodule
0.377, 8 of 15 found), so even the global Dice misses (0.806). Half the training patients and
six validation patients are too few for this recipe; its figures swing 0.61-0.92 with the split
and the seed.

Result (2026-11-28, session 5, seed 42, the whole cohort: 80 patients -> 52/12/16; the recipe
below plus ``--augment`` and a wider minimum-peak grid; 20 epochs, then 1632 false-positive
patches from 51 of 52 training patients and 8 fine-tuning epochs; train 14.3 min + round 2
9.5 min with one TensorFlow thread on the shared machine, 33 min in all; whole-scan inference
2.56 s per scan plain, 4.41 s with flips):

    variant         threshold  min vol  min peak  val Dice  test per patient  test global
    round 1               0.9    100       0        0.598        0.457            0.689
    round 1 + flip        0.5      0       0.99     0.747        0.575            0.838
    round 2               0.9    100       0        0.785        0.933            0.910
    round 2 + flip        0.5     50       0.95     0.879        0.871            0.920   <- chosen

    level       subset        n   Dice   IoU
    whole scan  per patient  16  0.871 0.826
    whole scan  global       16  0.920 0.853
    per nodule  all nodules  20  0.838 0.795
    per nodule  >= 1000 mm3   9  0.908 0.846
    per nodule  < 1000 mm3   11  0.782 0.754

Per test patient (whole scan): 0.949, 1.000 (healthy), 0.971, 0.894, 1.000 (healthy), 0.836,
0.974, 1.000 (healthy), 0.971, 0.808, 0.910, 1.000, 0.000 (healthy, one 4-voxel false
component), 1.000, 0.645, 0.978. Nodules found 18 of 20 (missed: a 5-voxel and a 3-voxel one,
peak probability 0.12 and 0.09); voxels: 6920 correct, 8 in missed nodules, 946 missed and 233
extra on outlines, 9 in false candidates (2 components).

**The 0.85 target is met per patient on the whole cohort: 0.871** (was 0.797 without
``--augment``; the variant was chosen on validation, 0.879 there), and globally (0.920, was
0.881) -- but not on the 40-patient split with the same command (below). Only the
hard-negative round plus augmentation makes it: round 1 alone is worse with
augmentation than without (0.457 against 0.676 per patient; the augmented first model fires on
more look-alikes, which round 2 then mines -- 1632 patches against 608). Round 2 without flips
scored 0.933 on test, but validation preferred round 2 + flip, and that is the figure reported.

What the diagnosis showed (``--save-maps``, ground truth against the inference lung mask):

- The 512-voxel nodule missed before (synth-0048) is the cohort's faintest part-solid nodule
  (ground glass, mean -559 HU, 7 % of its voxels above 0.5 after windowing, against 79-96 % for
  the solid nodules over 1000 mm3; 7 of the 76 training nodules are part-solid). It lies wholly
  inside the lung mask used for inference: not a mask cut-off. With the augmentation it is
  found (Dice 0.915).
- The half-outlined 38 mm nodule (synth-0079, 0.642 per nodule, 606 of its 1266 voxels found)
  is a broad-based juxtapleural nodule: in its lower 7 slices (z 92-98, 538 voxels) it lies
  against the chest wall at the wall's own intensity, and the probability there stays at or
  below 0.5 (found 0 of 538 voxels); 5 of its 113 voxels within 3 mm of the wall are found. Only
  the curve of the pleura separates them -- a case for more (3D) context, not fixed here. The
  synthetic lung mask includes the nodule; whether a computed one (``segment_lungs``) keeps such
  a nodule was not measured.
- Still lost: the two smallest nodules (3 and 5 voxels, 33-36 mm3) and one 4-voxel false
  component on a healthy scan, which scores that patient 0 (the per-patient convention).

One split and one seed: the per-patient figure moves by 1/16 = 0.06 with one patient, so 0.871
is a pass, not a margin.

The same command on the default 40-patient split (2026-11-28, session 5, without
``--n-patients 0``; 26/6/8, 576 false-positive patches from 18 of 26 training patients; train
7.5 min + round 2 5.3 min, 18 min in all, one TensorFlow thread, nice 10):

    variant         threshold  min vol  min peak  val Dice  test per patient  test global
    round 1               0.5      0       0.95     0.644        0.600            0.887
    round 1 + flip        0.3     20       0.5      0.674        0.609            0.908   <- chosen
    round 2               0.9     20       0.99     0.645        0.658            0.724
    round 2 + flip        0.9      0       0        0.650        0.870            0.925

Here validation (6 patients, the four variants within 0.03 of each other) chose round 1 + flip:
per patient 0.609 (both healthy test scans score 0 on 4-32 false voxels; a 47-voxel nodule gets
183 predicted voxels), global 0.908, all 7 test nodules found, per nodule 0.836. The recipe
without ``--augment`` scored 0.914 on this split. **So neither recipe meets 0.85 per patient on
both splits**: without augmentation 0.914 (40) and 0.797 (80); with it 0.609 (40) and 0.871
(80). The global Dice meets 0.85 everywhere (0.881-0.940). Six validation patients cannot tell
apart variants this close; the whole cohort's 12 are the better basis.

On notebook 06's own split (2026-11-29, session 9, ``--n-patients 24 --tta --hard-round
--thresholds 0.3 0.5 0.7 0.9 --min-peaks 0 0.95 0.99``, with and without ``--augment``; 15/4/5
patients, two TensorFlow threads on the idle machine, 3-4 min a run): the four validation
patients score every variant of both runs within 0.72-0.73, so they cannot tell the recipes
apart. With ``--augment`` validation chose round 2 + flip (test 0.563 per patient, 0.778
global; all 6 test nodules found but under-outlined at threshold 0.9; round 1 alone 0.469 /
0.808); without it, round 1 (0.342 / 0.786; the 4 small test nodules missed with peak
probability 0.00). Notebook 06 itself with the augmentation (``augment = True``, one run) scored
whole-scan validation Dice 0.472 against 0.721 without, and test 0.346 / 0.735 against 0.358 /
0.808, so the notebook keeps it off by default: augmentation helps on the whole cohort, but on a
split this small its effect is within the run-to-run noise and validation does not choose it.

Command: ``TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 nice -n 10
.venv/bin/python benchmarks/bench_synthetic_segmentation.py --n-patients 0 --tta --hard-round
--augment --min-peaks 0 0.5 0.8 0.95 0.99 --save-maps /tmp/<you>/maps`` (add ``--members 3``
for the seed ensembles above).

Previous result (without ``--augment``):

(2026-11-28, seed 42, the whole cohort: 80 patients -> 52/12/16 train/val/test; 20 epochs,
then 608 false-positive patches from 19 of the 52 training patients and 8 fine-tuning epochs;
train 15.9 min + round 2 12.1 min with one TensorFlow thread on the shared machine under a load
of 3-4, 53 min in all):

    variant         threshold  min vol  min peak  val Dice  test per patient  test global
    round 1               0.3      0       0.95     0.759        0.676            0.859
    round 1 + flip        0.3      0       0.95     0.837        0.772            0.868
    round 2               0.5     20       0        0.772        0.550            0.871
    round 2 + flip        0.3      0       0.95     0.899        0.797            0.881   <- chosen

The chosen variant (round 2 + flip, threshold 0.3, no minimum volume, minimum peak 0.95) on the
16 test patients (20 nodules):

    level       subset        n   Dice   IoU
    whole scan  per patient  16  0.797 0.749
    whole scan  global       16  0.881 0.787
    per nodule  all nodules  20  0.722 0.670
    per nodule  >= 1000 mm3   9  0.788 0.724
    per nodule  < 1000 mm3   11  0.667 0.627

Per test patient (whole scan): 0.920, 1.000 (healthy), 0.960, 0.810 (one 47-voxel nodule),
1.000 (healthy), 0.786, 0.973, 1.000 (healthy), 0.975, 0.714 (one 27-voxel nodule), 0.000 (a
512-voxel and a 5-voxel nodule, both missed), 0.000 (one 7-voxel nodule, missed), 1.000
(healthy), 1.000 (two 19-voxel nodules, both exact), 0.638 (a large nodule half outlined: 641 of
1266 voxels), 0.974. No false candidate in any test scan (all four healthy scans score 1);
nodules found 16 of 20. Voxels: 6516 correct, 527 in missed nodules, 831 missed and 405 extra
on outlines, 0 in false candidates.

What helped, on validation and then on test alike: the flips (+0.08 val, +0.10 test per patient
on round 1) and the minimum peak, which every flip variant chose (candidates grown from 0.3 that
must reach 0.95 somewhere: faint rims kept, faint false blobs dropped). The hard-negative round
helped only with the flips (round 2 alone chose a different post-processing and dropped to 0.550
on test). The 0.85 target is NOT met per patient: 0.797 on 16 test patients. The remaining loss
is nodules, not false positives: two patients score 0 on missed nodules (one of them a 3734 mm3
nodule; whether the minimum peak or the threshold lost it was not measured) and one large nodule
is half outlined. The global Dice (0.881) meets it.

Command of that result: ``TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 nice -n 10
.venv/bin/python benchmarks/bench_synthetic_segmentation.py --n-patients 0 --tta --hard-round
--min-peaks 0 0.95 0.99``.

The same options on the default 40-patient split (2026-11-28, ``nice -n 5 ... --tta --hard-round
--min-peaks 0 0.95 0.99``, both cores, 14 min in all; 26/6/8, 352 false-positive patches from
11 of the 26 training patients; whole-scan inference 1.75 s per scan plain, 2.89 s with flips):

    variant         threshold  min vol  min peak  val Dice  test per patient  test global
    round 1               0.9     20       0.95     0.666        0.822            0.915
    round 1 + flip        0.3      0       0.95     0.730        0.719            0.931
    round 2               0.3    100       0        0.639        0.790            0.933
    round 2 + flip        0.3     50       0.95     0.799        0.914            0.940   <- chosen

    level       subset        n   Dice   IoU
    whole scan  per patient   8  0.914 0.865
    whole scan  global        8  0.940 0.887
    per nodule  all nodules   7  0.933 0.883
    per nodule  >= 1000 mm3   4  0.939 0.885
    per nodule  < 1000 mm3    3  0.926 0.879

All 7 test nodules found (a 3-voxel and a 7-voxel one exactly), both healthy scans score 1, two
false components in the other scans (40 voxels). On this split the chosen variant meets 0.85 per
patient (0.914, 8 test patients); on the whole cohort it does not (0.797, 16). With two splits
disagreeing, the per-patient target is not robustly met.

Previous result (2026-11-27, seed 42, defaults: 40 patients -> 26/6/8 train/val/test, context 2
at 2.5 mm, 96 positive and 32 negative patches per training patient, 20 epochs; train 6.1 min with
one TensorFlow thread on the shared 2-core machine, about 10 min in all). Validation chose threshold
0.9 and minimum volume 100 mm3 (val whole-scan Dice per patient 0.631):

    level       subset        n   Dice   IoU
    whole scan  per patient   8  0.576 0.536
    whole scan  global        8  0.929 0.867
    per nodule  all nodules   7  0.659 0.613
    per nodule  >= 1000 mm3   4  0.938 0.884
    per nodule  < 1000 mm3    3  0.286 0.250

Per test patient (whole scan): 0.915, 0.857 (its one 7-voxel nodule, found exactly), 0.000 (no
nodule, 28 false-positive voxels in 2 components), 0.969, 0.000 (one 47-voxel nodule, not
found), 0.000 (no nodule, 15 false-positive voxels), 0.916, 0.951. Nodules found 5 of 7 (the
missed: 3 and 47 voxels). Voxels summed over the test scans: 2441 correct, 50 in missed nodules,
104 missed and 178 extra on outlines, 43 in false candidates; global Dice 0.929, 0.936 without the
false candidates, 0.939 with the missed nodules found perfectly. The 0.85 goal is met by the
global Dice and by the large nodules, not by the mean per patient: three of eight test patients
score 0 -- two healthy scans with 15-28 false-positive voxels and one whose only nodule (47
voxels) was missed.

Before (same split, previous defaults: adjacent-slice context, 48 positive patches, 30 epochs):
whole scan per patient 0.439 (0.914, 0.000, 0.000, 0.959, 0.000, 0.000, 0.727, 0.909); its
per-nodule figures (0.686 all, 0.891 >= 1000 mm3, 0.595 < 1000 mm3) were measured with the
previous ``score_nodules``, which split a single spiculated nodule into its detached spicule
fragments and credited a small nodule with its large neighbour's voxels, so they are not
comparable; its global Dice was not measured. The notebook's default run (24 patients, 20
epochs; 5 test patients, 6 nodules): whole scan per patient 0.267 -> 0.348, global 0.797 (new),
per nodule 0.713 (previous definition) -> 0.900 on the 2 large nodules and 0.000 -> 0.000 on the
4 small ones; notebook wall time 248 s with one TensorFlow thread on the shared machine (the
previous committed run recorded 271 s).

Command of the previous result: ``TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 nice -n 10
.venv/bin/python benchmarks/bench_synthetic_segmentation.py``.

Run: ``.venv/bin/python benchmarks/bench_synthetic_segmentation.py [--n-patients 0] [--epochs 40]
[--tta] [--hard-round] [--augment] [--members 3] [--min-peaks 0 0.95 0.99] [--save-maps DIR]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sphere_label(diameter_mm, spacing, offset, supersample=6, half=7):
    """Voxels at least half inside a sphere (the cohort's label rule), by supersampling."""
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = [((np.arange(-half, half + 1)[:, None] + sub) - o).ravel() * s
            for o, s in zip(offset, spacing, strict=True)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij", sparse=True)
    inside = (zz**2 + yy**2 + xx**2) <= (diameter_mm / 2) ** 2
    n = 2 * half + 1
    shape = (n, supersample, n, supersample, n, supersample)
    return inside.reshape(shape).mean(axis=(1, 3, 5)) >= 0.5


def dice_bound_table(spacing=(3.0, 2.65, 2.65), diameters=(3, 4, 5, 6, 7, 8, 9, 12, 20, 30),
                     n_draws=100, seed=0) -> pd.DataFrame:
    """Dice of a small nodule's label against the same label with its boundary off by one voxel.

    Spheres at random sub-voxel positions, labelled like the cohort (voxels at least half
    inside); the "prediction" is the label shifted by one voxel in-plane or along z, grown by one
    face-neighbour layer, or with one voxel added or removed. What an otherwise perfect
    segmenter scores when its outline is one voxel off -- the physical ceiling at this voxel size.
    """
    from scipy import ndimage

    from lunglib.evaluation.segmentation import dice

    rng = np.random.default_rng(seed)
    grow = ndimage.generate_binary_structure(3, 1)
    rows = []
    for d in diameters:
        draws = []
        for _ in range(n_draws):
            truth = _sphere_label(d, spacing, rng.uniform(-0.5, 0.5, 3))
            if not truth.any():
                continue
            ring = np.argwhere(ndimage.binary_dilation(truth, grow) & ~truth)
            plus, minus = truth.copy(), truth.copy()
            plus[tuple(ring[0])] = True
            minus[tuple(np.argwhere(truth)[0])] = False
            draws.append((truth.sum(), dice(truth, np.roll(truth, 1, axis=2)),
                          dice(truth, np.roll(truth, 1, axis=0)),
                          dice(truth, ndimage.binary_dilation(truth, grow)),
                          dice(truth, plus), dice(truth, minus)))
        rows.append((d, *np.mean(draws, axis=0)))
    return pd.DataFrame(rows, columns=["diameter_mm", "voxels", "shift 1 in-plane", "shift 1 z",
                                       "grown 1 layer", "+1 voxel", "-1 voxel"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patients", type=int, default=40, help="0 = the whole cohort")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--context", type=int, default=2)
    parser.add_argument("--context-mm", type=float, default=2.5,
                        help="distance between the 2.5D channels in mm (0 = adjacent slices)")
    parser.add_argument("--n-pos", type=int, default=96)
    parser.add_argument("--n-neg", type=int, default=32)
    parser.add_argument("--hard-fraction", type=float, default=0.5)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tta", action="store_true",
                        help="also try left-right flip test-time augmentation (chosen on val)")
    parser.add_argument("--hard-round", action="store_true",
                        help="also try a second round: mine the first model's false positives on "
                             "the training patients and fine-tune with them (chosen on val)")
    parser.add_argument("--n-hard", type=int, default=32,
                        help="false-positive patches mined per training patient")
    parser.add_argument("--hard-epochs", type=int, default=8)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.8, 0.9],
                        help="probability-threshold grid for the validation choice")
    parser.add_argument("--min-peaks", type=float, nargs="+", default=[0.0],
                        help="minimum-peak grid for the validation choice (0 = none)")
    parser.add_argument("--augment", action="store_true",
                        help="rotate and mirror the training patches in-plane with their masks, "
                             "drawn afresh every epoch (augment.dihedral_patches)")
    parser.add_argument("--members", type=int, default=1,
                        help="train this many models (seeds --seed, --seed + 1, ...) on the same "
                             "split, each with the whole recipe, and score the mean of their "
                             "probability maps (a seed ensemble)")
    parser.add_argument("--save-maps", type=Path, default=None, metavar="DIR",
                        help="save every variant's probability map of each validation and test "
                             "patient (float16 npz) under DIR, for diagnosis without a rerun; "
                             "put DIR outside the repository")
    parser.add_argument("--dice-bound", action="store_true",
                        help="only print the off-by-one-voxel Dice of small nodules and exit")
    args = parser.parse_args(argv)
    if args.members < 1:
        parser.error(f"--members must be 1 or more (the number of models to average); got "
                     f"{args.members}")
    if args.dice_bound:
        print("Dice of a nodule label against itself one voxel off, 3 x 2.65 x 2.65 mm voxels "
              "(mean of 100 random sub-voxel positions)")
        print(dice_bound_table().to_string(index=False, float_format="{:.3f}".format))
        return 0

    from lunglib.course import course_settings, open_course_dataset, setup_notebook

    rng = setup_notebook(args.seed, tensorflow=True)
    import keras
    from scipy import ndimage

    from lunglib.augment import dihedral_patches
    from lunglib.evaluation.segmentation import (
        choose_postprocessing,
        dice,
        dice_global,
        error_breakdown,
        iou_global,
        score_cases,
        score_nodules,
    )
    from lunglib.evaluation.splits import patient_split
    from lunglib.inference.segment import (
        candidate_mask,
        context_step_for,
        false_positive_patches,
        predict_volume,
        sample_patches,
        slice_window,
    )
    from lunglib.models.unet import build_unet, resize_unet
    from lunglib.preprocess import window

    ds = open_course_dataset("synthetic", course_settings(seed=args.seed))
    ids = ds.patient_ids()
    ids = ids[:args.n_patients] if args.n_patients else ids
    labels = ds.labels()
    split = patient_split(ids, [labels.get(p, 0) for p in ids], val_fraction=0.15,
                          test_fraction=0.2, seed=args.seed)
    cases = {}
    for pid in ids:
        scan = ds.load_scan(pid)
        nodules = ds.nodule_mask(pid, scan)
        if nodules is not None:
            cases[pid] = {"image": window(scan.hu), "nodules": nodules, "spacing": scan.spacing,
                          "lung": ds.lung_mask(pid, scan),
                          "step": context_step_for(scan.spacing[0], args.context_mm)}
    parts = {name: [p for p in getattr(split, name) if p in cases]
             for name in ("train", "val", "test")}
    print({name: len(p) for name, p in parts.items()}, "patients")

    def patches(pids):
        xs, ys = [], []
        for pid in pids:
            c = cases[pid]
            x, y = sample_patches(c["image"], c["nodules"], c["lung"], (args.patch, args.patch),
                                  args.n_pos, args.n_neg, rng=rng, context=args.context,
                                  hard_fraction=args.hard_fraction, context_step=c["step"])
            xs.append(x if args.context else x[..., None])
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)[..., None].astype(np.float32)

    x_train, y_train = patches(parts["train"])
    x_val, y_val = patches(parts["val"])
    def new_model(seed):
        keras.utils.set_random_seed(seed)
        return build_unet((args.patch, args.patch, 2 * args.context + 1), depth=args.depth,
                          filters=args.filters, dropout=0.1, batch_norm=False,
                          learning_rate=args.learning_rate)

    def fit(model, x, y, epochs):
        if not args.augment:
            model.fit(x, y, validation_data=(x_val, y_val), batch_size=32, epochs=epochs,
                      verbose=0)
            return
        for _ in range(epochs):  # a fresh orientation of every patch each epoch
            xa, ya = dihedral_patches(x, y, rng)
            model.fit(xa, ya, validation_data=(x_val, y_val), batch_size=32, epochs=1,
                      verbose=0)

    seconds = {}

    def infer(model, pids, flip=False):
        out, start = {}, time.perf_counter()
        for pid in pids:
            c = cases[pid]
            whole = slice_window(c["lung"], multiple=2**args.depth)
            out[pid] = predict_volume(resize_unet(model, whole), c["image"], c["lung"], whole,
                                      context=args.context, context_step=c["step"], flip=flip)
        seconds[flip] = (time.perf_counter() - start) / len(pids)
        return out

    def train_member(seed):
        """One model's whole recipe: its variants' probability maps of the val and test patients."""
        nonlocal train_min, hard_min
        model = new_model(seed)
        start = time.perf_counter()
        fit(model, x_train, y_train, args.epochs)
        train_min += (time.perf_counter() - start) / 60
        found = {"round 1": infer(model, evaluated)}
        if args.tta:
            found["round 1 + flip"] = infer(model, evaluated, flip=True)
        if args.hard_round:
            start = time.perf_counter()
            mined = []
            for pid, prob in infer(model, parts["train"]).items():
                c = cases[pid]
                x, y = false_positive_patches(prob, c["image"], c["nodules"],
                                              (args.patch, args.patch), args.n_hard, rng=rng,
                                              context=args.context, context_step=c["step"])
                mined.append((x if args.context else x[..., None], y))
            x_hard = np.concatenate([x for x, _ in mined])
            y_hard = np.concatenate([y for _, y in mined])[..., None].astype(np.float32)
            print(f"model seed {seed}, round 2: {len(x_hard)} false-positive patches from "
                  f"{sum(len(x) > 0 for x, _ in mined)}/{len(mined)} training patients")
            fit(model, np.concatenate([x_train, x_hard]), np.concatenate([y_train, y_hard]),
                args.hard_epochs)
            hard_min += (time.perf_counter() - start) / 60
            found["round 2"] = infer(model, evaluated)
            if args.tta:
                found["round 2 + flip"] = infer(model, evaluated, flip=True)
        return found

    test = parts["test"]

    def choose_and_score(variants):
        """Each variant's post-processing chosen on validation, then its test Dice (two levels)."""
        summary, choices = [], {}
        for name, probs in variants.items():
            grid = choose_postprocessing(
                [probs[p] for p in parts["val"]], [cases[p]["nodules"] for p in parts["val"]],
                [cases[p]["spacing"] for p in parts["val"]],
                thresholds=args.thresholds, min_volumes_mm3=(0, 20, 50, 100, 200, 400),
                min_peaks=args.min_peaks)
            best = grid.iloc[0]
            choices[name] = (float(best.threshold), float(best.min_volume_mm3),
                             float(best.min_peak))
            masks = [candidate_mask(probs[p], cases[p]["spacing"], *choices[name][:2],
                                    min_peak=choices[name][2]) for p in test]
            truths = [cases[p]["nodules"] > 0 for p in test]
            summary.append((name, *choices[name], best.dice,
                            float(np.mean([dice(t, m) for t, m in zip(truths, masks,
                                                                       strict=True)])),
                            dice_global(truths, masks)))
        return pd.DataFrame(summary, columns=["variant", "threshold", "min_volume_mm3",
                                              "min_peak", "val_dice", "test_dice",
                                              "test_dice_global"]), choices

    evaluated = parts["val"] + parts["test"]
    train_min = hard_min = 0.0
    # Only a running sum of the members' maps is kept (K models' maps of every variant would
    # take K times the memory); each member is scored alone as soon as it is trained.
    variants, alone = {}, []
    for k in range(args.members):
        found = train_member(args.seed + k)
        if args.members > 1:
            alone.append(choose_and_score(found)[0].assign(model_seed=args.seed + k))
        for name, probs in found.items():
            total = variants.setdefault(name, {})
            for pid, prob in probs.items():
                total[pid] = prob if k == 0 else total[pid] + prob
    for probs in variants.values():  # the ensemble's map is the members' mean probability
        for pid in probs:
            probs[pid] = probs[pid] / args.members

    if args.save_maps is not None:
        from lunglib.io.atomic import atomic_path

        for name, probs in variants.items():
            for pid, prob in probs.items():
                target = args.save_maps / name.replace(" + ", "_").replace(" ", "") / f"{pid}.npz"
                with atomic_path(target, keep_suffix=True) as tmp:
                    np.savez_compressed(tmp, prob=prob.astype(np.float16),
                                        part="val" if pid in parts["val"] else "test")
        print(f"probability maps saved under {args.save_maps}")

    if alone:  # each member alone, for the spread; not candidates for the choice
        print()
        print("each model alone (post-processing chosen on validation for each):")
        print(pd.concat(alone, ignore_index=True).to_string(index=False,
                                                           float_format="{:.3f}".format))
    summary, choices = choose_and_score(variants)
    chosen = summary.sort_values("val_dice", ascending=False, kind="stable").variant.iloc[0]
    print()
    print((f"the mean of {args.members} models' probabilities: " if args.members > 1 else "")
          + "variants, post-processing chosen on validation; the variant chosen by val_dice is "
          f"'{chosen}' (test columns: whole scan per patient and global)")
    print(summary.to_string(index=False, float_format="{:.3f}".format))
    print("whole-scan inference per patient: "
          + ", ".join(f"{'flip' if k else 'plain'} {v:.2f} s" for k, v in seconds.items()))
    probs = variants[chosen]
    threshold, min_volume, min_peak = choices[chosen]
    print(f"validation choice: {chosen}, threshold {threshold}, min volume {min_volume:g} mm3, "
          f"min peak {min_peak:g}")

    preds = {p: candidate_mask(probs[p], cases[p]["spacing"], threshold, min_volume,
                               min_peak=min_peak) for p in test}
    scans = score_cases([cases[p]["nodules"] > 0 for p in test], [preds[p] for p in test], test,
                        spacings=[cases[p]["spacing"] for p in test])
    nodules = pd.concat([score_nodules(cases[p]["nodules"], preds[p], p, cases[p]["spacing"])
                         for p in test], ignore_index=True)
    nodules["volume_mm3"] = [row.true_voxels * float(np.prod(cases[row.case_id]["spacing"]))
                             for row in nodules.itertuples()]
    # Why a nodule is missed or cut: the highest probability it reached, against the threshold
    # and the minimum peak (score_nodules takes the nodule labels as given).
    peaks = {}
    for p in test:
        lab = np.asarray(cases[p]["nodules"]).astype(np.int32)
        n = int(lab.max())
        if n:
            peaks.update({(p, k): v for k, v in zip(
                range(1, n + 1), ndimage.maximum(probs[p], lab, np.arange(1, n + 1)),
                strict=True)})
    nodules["peak_prob"] = [peaks.get((row.case_id, row.nodule), np.nan)
                            for row in nodules.itertuples()]
    big = nodules.volume_mm3 >= 1000.0  # about 12 mm and up (the cohort's malignant range)
    truths, masks = [cases[p]["nodules"] > 0 for p in test], [preds[p] for p in test]
    rows = [
        ("whole scan", "per patient", len(scans), scans.dice.mean(), scans.iou.mean()),
        ("whole scan", "global", len(scans), dice_global(truths, masks),
         iou_global(truths, masks)),
        ("per nodule", "all nodules", len(nodules), nodules.dice.mean(), nodules.iou.mean()),
        ("per nodule", ">= 1000 mm3", int(big.sum()), nodules.dice[big].mean(),
         nodules.iou[big].mean()),
        ("per nodule", "< 1000 mm3", int((~big).sum()), nodules.dice[~big].mean(),
         nodules.iou[~big].mean()),
    ]
    table = pd.DataFrame(rows, columns=["level", "subset", "n", "Dice", "IoU"])
    print()
    print(f"synthetic nodule segmentation, held-out test patients (seed {args.seed}); 2.5D U-Net "
          f"context {args.context}, depth {args.depth}, filters {args.filters}, "
          f"{args.epochs} epochs, {args.members} model(s), train {train_min:.1f} min"
          + (f", round 2 (inference + fine-tune) {hard_min:.1f} min" if args.hard_round else ""))
    print(table.to_string(index=False, float_format="{:.3f}".format))
    print()
    errors = pd.DataFrame([error_breakdown(cases[p]["nodules"], preds[p], p) for p in test])
    scans = scans.merge(errors[["case_id", "nodules", "nodules_found", "false_components"]],
                        on="case_id")
    print(scans.drop(columns="hd95_mm").to_string(index=False, float_format="{:.3f}".format))
    total = errors.drop(columns="case_id").sum()
    fn, fp = total.fn_missed + total.fn_outline, total.fp_outline + total.fp_elsewhere

    def pooled(tp, fn, fp):
        return 2 * tp / (2 * tp + fn + fp)

    print()
    print("where the global Dice is lost (voxels, summed over test patients): "
          + ", ".join(f"{k} {int(total[k])}" for k in ("tp", "fn_missed", "fn_outline",
                                                        "fp_outline", "fp_elsewhere")))
    print(f"nodules found {int(total.nodules_found)}/{int(total.nodules)}, false components "
          f"{int(total.false_components)}; global Dice {pooled(total.tp, fn, fp):.3f}, without "
          f"the false components {pooled(total.tp, fn, total.fp_outline):.3f}, with the missed "
          f"nodules found perfectly {pooled(total.tp + total.fn_missed, total.fn_outline, fp):.3f}")
    print()
    print(nodules.drop(columns="hd95_mm").to_string(index=False, float_format="{:.3f}".format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
