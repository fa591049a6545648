"""lunglib characterize: outline, measure and score a nodule with the shipped real-data models.

Real data from ../shared/data (the conftest fixtures skip where it is absent): LIDC-IDRI-0001, whose
one nodule >= 3 mm four readers outlined and rated 5, 5, 5, 4, and Lung-PET-CT-Dx A0002, an
adenocarcinoma boxed on 8 mm slices of another scanner. The LIDC patient's patches are in the
shipped models' training data, so its figures are a smoke test; the model cards' figures come from
held-out patients.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lunglib.characterize import axes_mm, characterize_scan, nodule_extent
from lunglib.datasets import LIDCDataset, LungPETCTDxDataset
from lunglib.datasets.lung_pet_ct_dx import PATIENT_PREFIX

LIDC_PID = "LIDC-IDRI-0001"
MEASURES = ["long_axis_mm", "short_axis_mm", "area_mm2", "volume_mm3", "slices", "mean_hu",
            "malignancy", "dice_consensus"]


def test_axes_of_a_rectangle_are_its_diagonal_and_the_width_across_it():
    outline = np.zeros((20, 20), bool)
    outline[5:9, 3:13] = True  # 4 rows x 10 columns of 1 mm x 0.5 mm pixels: 4 mm x 5 mm
    long_axis, short_axis = axes_mm(outline, (1.0, 0.5))
    assert long_axis == pytest.approx(math.hypot(4.0, 5.0))
    # the rectangle's extent across its diagonal: twice its area over the diagonal
    assert short_axis == pytest.approx(2 * 4.0 * 5.0 / math.hypot(4.0, 5.0))
    assert axes_mm(np.zeros((5, 5), bool), (1.0, 1.0)) == (0.0, 0.0)


def test_the_extent_stops_where_the_outline_shrinks_or_jumps_away():
    yy, xx = np.ogrid[:20, :20]
    stack = np.stack([(yy - 10) ** 2 + (xx - 10) ** 2 <= r**2 for r in (2, 6, 7, 6, 0)])
    stack[4, 0:4, 0:10] = True  # 40 pixels elsewhere: large enough, but touching nothing
    whole = stack.sum(axis=(1, 2))  # 13, 113, 149, 113, 41
    areas = nodule_extent(stack)
    # slice 0 keeps under 25 % of the largest area; slice 4 does not overlap slice 3
    assert areas.tolist() == [0, 113, 149, 113, 0] and whole[4] >= 0.25 * whole.max()
    stack[4, 8:12, 8:12] = True  # now it touches the nodule: 16 of its 56 pixels overlap
    assert nodule_extent(stack)[4] == 0
    assert nodule_extent(stack, min_overlap=0.25)[4] == stack[4].sum()


@pytest.fixture(scope="module")
def lidc(lidc_case_dir, tmp_path_factory):
    xml = next(lidc_case_dir.rglob("*.xml"))
    out = tmp_path_factory.mktemp("characterize")
    result = characterize_scan(lidc_case_dir, annotation=xml, output_dir=out / "dicom")
    ds = LIDCDataset(lidc_case_dir.parent)
    scan = ds.load_scan(LIDC_PID)
    return {"xml": xml, "out": out, "result": result, "scan": scan,
            "mask": ds.nodule_mask(LIDC_PID, scan) == 1}


def test_the_real_lidc_nodule_is_outlined_like_the_readers_and_rated_malignant(lidc):
    table = lidc["result"].table
    assert len(table) == 1 and bool(table["found"].iloc[0])
    row = table.iloc[0]
    assert row["malignancy_by_reader"] == "5,5,5,4"
    assert row["dice_consensus"] > 0.75
    assert row["malignancy"] > 0.8  # readers 5, 5, 5, 4 (a training patient: a smoke test)
    # the four readers' own outlines hold 6610-8459 mm3 (consensus 7764); the approximate volume
    # (every slice the U-Net follows, times the spacing) lies above them: within 1.3x of the
    # largest reader, and far below what an unstopped stack of 25 slices would give
    consensus_mm3 = lidc["mask"].sum() * np.prod(lidc["scan"].spacing)
    assert 0.8 * consensus_mm3 < row["volume_mm3"] < 1.3 * 8459.0
    # the largest consensus section is ~1067 pixels of 0.70 mm: a 20-35 mm long axis
    assert 20.0 < row["long_axis_mm"] < 40.0 and row["short_axis_mm"] <= row["long_axis_mm"]
    assert -300.0 < row["mean_hu"] < 100.0  # soft tissue, not lung


def test_the_outputs_are_written_without_identifiers(lidc):
    out = lidc["out"] / "dicom"
    for name in ("nodules.csv", "nodules.json", "nodules.png"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "nodules.json").read_text())
    assert summary["nodules"][0]["dice_consensus"] == pytest.approx(
        lidc["result"].table["dice_consensus"].iloc[0])
    for name in ("nodules.csv", "nodules.json"):
        text = (out / name).read_text()
        assert LIDC_PID not in text and "0001" not in text.replace(".0001", "")


def test_a_nifti_export_gives_the_same_numbers(lidc):
    path = lidc["out"] / "case.nii.gz"
    sitk.WriteImage(lidc["scan"].to_sitk(), str(path))
    nifti = characterize_scan(path, annotation=lidc["xml"]).table
    dicom = lidc["result"].table
    for column in MEASURES:
        assert nifti[column].iloc[0] == pytest.approx(dicom[column].iloc[0], rel=1e-6), column


def test_a_point_in_mm_gives_the_annotation_s_numbers(lidc):
    row = lidc["result"].table.iloc[0]
    at = f"{row['x_mm']},{row['y_mm']},{row['z_mm']}"
    by_point = characterize_scan(lidc["scan"].source, at=[at]).table.iloc[0]
    for column in ["long_axis_mm", "volume_mm3", "malignancy", "slice"]:
        assert by_point[column] == pytest.approx(row[column], rel=1e-6), column
    assert by_point["dice_consensus"] is None or np.isnan(by_point["dice_consensus"])


def test_the_boxed_tumour_of_another_scanner_is_characterised(pet_ct_dx_dir):
    ds = LungPETCTDxDataset(pet_ct_dx_dir)
    pid = ds.patient_ids()[0]
    scan = ds.load_scan(pid)
    boxes = pet_ct_dx_dir / "Annotation" / pid.removeprefix(PATIENT_PREFIX)
    table = characterize_scan(scan.source, annotation=boxes, series_uid=scan.series_uid).table
    assert len(table) >= 1 and table["found"].all()
    row = table.iloc[0]
    # the outline lies inside the tumour's boxes, and the numbers are real numbers
    assert row["long_axis_mm"] > 10.0 and 0.0 <= row["malignancy"] <= 1.0
    assert row["long_axis_mm"] <= row["box_long_side_mm"] * 1.5


def test_the_cli_prints_the_answer_without_tensorflow_noise(lidc):
    out = lidc["out"] / "cli"
    run = subprocess.run([sys.executable, "-m", "lunglib", "characterize",
                          str(lidc["scan"].source), "--from", str(lidc["xml"]), "--output",
                          str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "dice_consensus" in run.stdout and "5,5,5,4" in run.stdout
    assert f"{lidc['result'].table['long_axis_mm'].iloc[0]:.3f}" in run.stdout
    noise = [line for line in run.stderr.splitlines()
             if "cuda" in line.lower() or "tensorflow" in line.lower() or "oneDNN" in line]
    assert not noise, noise
    missing = subprocess.run([sys.executable, "-m", "lunglib", "characterize",
                              str(lidc["scan"].source)], capture_output=True, text=True,
                             timeout=600)
    assert missing.returncode == 2 and "--at" in missing.stderr


def test_a_batch_folder_with_a_broken_scan_characterises_the_rest(lidc, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    sitk.WriteImage(lidc["scan"].to_sitk(), str(folder / "case.nii.gz"))
    (folder / "broken.nii.gz").write_bytes(b"not a volume")
    row = lidc["result"].table.iloc[0]
    at = f"{row['x_mm']},{row['y_mm']},{row['z_mm']}"
    run = subprocess.run([sys.executable, "-m", "lunglib", "characterize", str(folder),
                          "--batch", "--at", at, "--output", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr  # one scan failed
    assert "failed: broken: " in run.stderr and "broken.nii.gz" in run.stderr
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("scan")
    assert summary.loc["case", "status"] == "ok" and summary.loc["broken", "status"] == "failed"
    assert summary.loc["case", "n_outlined"] == 1
    assert summary.loc["case", "max_malignancy"] == pytest.approx(row["malignancy"], rel=1e-6)
    written = pd.read_csv(tmp_path / "out" / "case" / "nodules.csv")
    assert written["long_axis_mm"].iloc[0] == pytest.approx(row["long_axis_mm"], rel=1e-6)

    loaded = subprocess.run([sys.executable, "-m", "lunglib", "load", str(folder), "--batch",
                             "--output", str(tmp_path / "load")], capture_output=True, text=True,
                            timeout=600)
    assert loaded.returncode == 1 and "failed: broken: " in loaded.stderr
    table = pd.read_csv(tmp_path / "load" / "summary.csv").set_index("scan")
    assert table.loc["case", "shape_zyx"] == str(lidc["scan"].shape)
