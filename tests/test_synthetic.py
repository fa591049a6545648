"""lunglib.synthetic: the embedded cohort read back through lunglib's own DICOM loader."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lunglib import synthetic
from lunglib.io.dicom import list_series, load_scan
from lunglib.synthetic.cohort import _write_cohort, _writer_lock

SEED = 11
MATRIX = 96  # small slices keep the tests quick; the geometry rules are the same at 128 or 512
N_PATIENTS = 4


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "cohort"
    return synthetic.write_cohort(out, n_patients=N_PATIENTS, seed=SEED, matrix=MATRIX,
                                  workers=1, progress=False)


@pytest.fixture(scope="module")
def patient_ids(cohort: Path) -> list[str]:
    return [row["id"] for row in _read_csv(cohort / "labels.csv")]


@pytest.fixture(scope="module")
def scans(cohort: Path, patient_ids: list[str]) -> dict:
    return {pid: load_scan(cohort / pid) for pid in patient_ids}


def test_layout_is_dsb2017_with_ground_truth(cohort: Path, patient_ids: list[str]) -> None:
    assert patient_ids == [f"synth-{i:04d}" for i in range(1, N_PATIENTS + 1)]
    for pid in patient_ids:
        files = list((cohort / pid).iterdir())
        assert files and all(f.suffix == ".dcm" for f in files)
        assert (cohort / "ground_truth" / f"{pid}.npz").is_file()
    params = json.loads((cohort / "cohort.json").read_text())["parameters"]
    assert params["seed"] == SEED and params["n_patients"] == N_PATIENTS
    assert params["matrix"] == MATRIX
    assert not list(cohort.glob(".partial-*"))
    header = (cohort / "nodules.csv").read_text().splitlines()[0].split(",")
    assert header == list(synthetic.NODULE_COLUMNS)


def test_loaded_geometry_matches_ground_truth(cohort: Path, patient_ids: list[str],
                                              scans: dict) -> None:
    thicknesses = set()
    for pid in patient_ids:
        scan = scans[pid]
        truth = synthetic.load_ground_truth(cohort, pid)
        assert scan.hu.shape == truth["nodule_labels"].shape == truth["lung_mask"].shape
        assert scan.shape[1:] == (MATRIX, MATRIX)
        np.testing.assert_allclose(scan.spacing, truth["spacing_zyx"], atol=1e-3)
        np.testing.assert_allclose(scan.origin, truth["origin_xyz"], atol=1e-3)
        assert 1.0 <= scan.spacing[0] <= 3.0
        fov = scan.spacing[2] * MATRIX
        assert 300.0 <= fov <= 420.0
        assert 180.0 <= scan.shape[0] * scan.spacing[0] <= 340.0  # the lungs and a margin
        assert not [f for f in scan.qc if f.severity != "info"]
        thicknesses.add(round(scan.spacing[0], 2))
        # nodules.csv world coordinates are where the loader puts the nodule centres
        for row in truth["nodules"]:
            centre = (row["center_z"], row["center_y"], row["center_x"])
            world = scan.voxel_to_world(centre)
            np.testing.assert_allclose(world, (row["world_x"], row["world_y"], row["world_z"]),
                                       atol=0.05)
    assert len(thicknesses) > 1, "slice thickness should vary between patients"


def test_dicom_headers_look_like_a_scanner_wrote_them(cohort: Path,
                                                      patient_ids: list[str]) -> None:
    pid = patient_ids[0]
    files = sorted((cohort / pid).glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    first = headers[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.Modality == "CT"
    assert float(first.RescaleIntercept) == -1024.0 and float(first.RescaleSlope) == 1.0
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert len(first.PixelSpacing) == 2 and 1.0 <= float(first.SliceThickness) <= 3.0
    assert str(first.PatientName).startswith("SYNTHETIC^DO-NOT-USE")
    assert first.PatientID != pid
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    assert sorted(int(h.InstanceNumber) for h in headers) == list(range(1, len(headers) + 1))
    z = [float(h.ImagePositionPatient[2]) for h in headers]
    assert z != sorted(z) and z != sorted(z, reverse=True), "file names must not sort in z order"
    # The lowest InstanceNumber is the highest slice: a loader that trusts it gets z backwards.
    by_instance = sorted(headers, key=lambda h: int(h.InstanceNumber))
    assert float(by_instance[0].ImagePositionPatient[2]) == max(z)


def _eroded(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), bool))


def test_hu_ranges_per_tissue(cohort: Path, patient_ids: list[str], scans: dict) -> None:
    specs = synthetic.cohort_specs(N_PATIENTS, SEED, MATRIX, 0.5)
    for spec in specs[:2]:
        # The tissue map is not on disk; regenerating the (deterministic) patient gives it.
        phantom = synthetic.make_patient(spec)
        hu = scans[spec.patient_id].hu
        np.testing.assert_array_equal(phantom.lung_mask,
                                      synthetic.load_ground_truth(cohort, spec.patient_id)
                                      ["lung_mask"])

        def median(name: str, tissue=phantom.tissue, hu=hu) -> float:
            core = _eroded(tissue == synthetic.TISSUES[name])
            return float(np.median(hu[core]))

        assert -1010 <= median("air") <= -990
        assert -900 <= median("lung") <= -800
        assert -130 <= median("fat") <= -70
        assert 0 <= median("soft_tissue") <= 60
        assert 0 <= median("blood") <= 60
        bone = hu[phantom.tissue == synthetic.TISSUES["bone"]]
        assert 300 <= np.median(bone) <= 1000
        assert np.percentile(bone, 99) <= 1000
        assert hu.min() >= -1024  # the loader turned the outside of the FOV circle into air


def test_masks_line_up_with_nodules(cohort: Path, patient_ids: list[str], scans: dict) -> None:
    n_checked = 0
    for pid in patient_ids:
        truth = synthetic.load_ground_truth(cohort, pid)
        labels, lung = truth["nodule_labels"], truth["lung_mask"].astype(bool)
        hu = scans[pid].hu
        assert set(np.unique(labels)) == {0, *(row["nodule"] for row in truth["nodules"])}
        assert not (labels > 0)[~lung].any(), "every nodule lies inside the lung mask"
        lung_hu = np.median(hu[lung & (labels == 0)])
        for row in truth["nodules"]:
            nodule = labels == row["nodule"]
            near = ndimage.binary_dilation(nodule, iterations=3) & lung & (labels == 0)
            assert hu[nodule].mean() > lung_hu + 300, (pid, row)
            assert hu[nodule].mean() > np.median(hu[near]) + 150, (pid, row)
            centre = np.round([row["center_z"], row["center_y"], row["center_x"]]).astype(int)
            zyx = np.argwhere(nodule)
            assert np.abs(zyx - centre).min(axis=0).max() <= 1  # centre is on/next to the mask
            n_checked += 1
    assert n_checked >= 2


def test_labels_agree_with_generated_nodules(cohort: Path) -> None:
    labels = {r["id"]: int(r["cancer"]) for r in _read_csv(cohort / "labels.csv")}
    rows = _read_csv(cohort / "nodules.csv")
    ranges = synthetic.NoduleRanges.from_difficulty(0.5)
    for pid, cancer in labels.items():
        mine = [r for r in rows if r["id"] == pid]
        assert cancer == int(any(r["malignant"] == "1" for r in mine))
        for r in mine:
            lo, hi = ranges.malignant_diameter if r["malignant"] == "1" else ranges.benign_diameter
            assert lo <= float(r["diameter_mm"]) <= hi
            if r["malignant"] == "1":
                assert r["kind"] in {"lobulated", "spiculated"}
                assert r["texture"] in {"solid", "part-solid"}
            else:
                assert r["kind"] == "smooth" and r["texture"] in {"solid", "calcified"}
    # labels are balanced by construction in a larger cohort
    specs = synthetic.cohort_specs(60, seed=3, matrix=MATRIX, difficulty=0.5)
    assert sum(s.cancer for s in specs) == 30


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    a = synthetic.write_cohort(tmp_path / "a", n_patients=2, seed=5, matrix=64, workers=1,
                               progress=False)
    b = synthetic.write_cohort(tmp_path / "b", n_patients=2, seed=5, matrix=64, workers=2,
                               progress=False)
    c = synthetic.write_cohort(tmp_path / "c", n_patients=2, seed=6, matrix=64, workers=1,
                               progress=False)
    files_a, files_b = _tree_bytes(a), _tree_bytes(b)
    assert files_a.keys() == files_b.keys()
    assert [k for k in files_a if files_a[k] != files_b[k]] == []
    files_c = _tree_bytes(c)
    assert files_c.keys() != files_a.keys()  # another seed, other UIDs and file names


def test_patient_name_never_in_what_lunglib_prints_or_returns(
    cohort: Path, patient_ids: list[str], scans: dict, capsys: pytest.CaptureFixture
) -> None:
    pid = patient_ids[0]
    header = pydicom.dcmread(next((cohort / pid).glob("*.dcm")), stop_before_pixels=True)
    secrets = [str(header.PatientName), "DO-NOT-USE", str(header.PatientID)]
    scan = scans[pid]
    print(scan, scan.describe(), scan.metadata, [str(f) for f in scan.qc])
    print(*list_series(cohort / pid))
    truth = synthetic.load_ground_truth(cohort, pid)
    written = [(cohort / name).read_text() for name in ("labels.csv", "nodules.csv",
                                                         "cohort.json")]
    written.append((cohort / "ground_truth" / f"{pid}.json").read_text())
    shown = capsys.readouterr().out
    everything = "\n".join([shown, repr(scan), str(scan.describe()), json.dumps(
        {k: v for k, v in truth.items() if not isinstance(v, np.ndarray)}), *written])
    for secret in secrets:
        assert secret not in everything


def test_anatomy_does_not_depend_on_the_label() -> None:
    healthy = synthetic.make_patient(synthetic.PatientSpec(0, "x", seed=2, cancer=0, matrix=64))
    sick = synthetic.make_patient(synthetic.PatientSpec(0, "x", seed=2, cancer=1, matrix=64))
    assert healthy.geometry == sick.geometry
    np.testing.assert_array_equal(healthy.lung_mask, sick.lung_mask)
    assert any(n.malignant for n in sick.nodules)
    assert not any(n.malignant for n in healthy.nodules)
    # Away from every nodule of either version, the volumes are identical voxel for voxel.
    near = ndimage.binary_dilation((healthy.nodule_labels > 0) | (sick.nodule_labels > 0),
                                   iterations=4)
    np.testing.assert_array_equal(healthy.hu[~near], sick.hu[~near])
    assert (healthy.hu[near] != sick.hu[near]).any()


@pytest.mark.slow
def test_global_statistics_do_not_give_the_label_away(tmp_path: Path) -> None:
    """Mean HU, lung volume and scan length predict cancer no better than chance."""
    n = 24
    out = synthetic.write_cohort(tmp_path / "c", n_patients=n, seed=21, matrix=56, workers=2,
                                 progress=False)
    features, labels, nodule_voxels = [], [], []
    for row in _read_csv(out / "labels.csv"):
        scan = load_scan(out / row["id"])
        truth = synthetic.load_ground_truth(out, row["id"])
        lung = truth["lung_mask"].astype(bool)
        features.append([scan.hu.mean(), lung.sum() * scan.voxel_volume_mm3,
                         scan.hu[lung].mean(), scan.shape[0] * scan.spacing[0]])
        labels.append(int(row["cancer"]))
        nodule_voxels.append((truth["nodule_labels"] > 0).sum() * scan.voxel_volume_mm3)
    x, y = np.asarray(features), np.asarray(labels)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    held_out = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    assert roc_auc_score(y, held_out) < 0.75
    # ...while the nodules themselves do separate the classes (the task is learnable).
    assert roc_auc_score(y, nodule_voxels) > 0.9


def test_resume_keeps_finished_patients(tmp_path: Path) -> None:
    out = synthetic.write_cohort(tmp_path / "c", n_patients=2, seed=4, matrix=64, workers=1,
                                 progress=False)
    before = _tree_bytes(out)
    keep = next((out / "synth-0001").iterdir())
    stamp = keep.stat().st_mtime_ns
    # An interrupted run: the second patient and the tables are gone, a partial folder remains.
    import shutil

    shutil.rmtree(out / "synth-0002")
    (out / "cohort.json").unlink()
    (out / ".partial-synth-0002-deadbeef").mkdir()
    (out / ".partial-synth-0002-deadbeef" / "x.dcm").write_bytes(b"half")
    synthetic.write_cohort(out, n_patients=2, seed=4, matrix=64, workers=1, progress=False)
    assert keep.stat().st_mtime_ns == stamp, "a finished patient was regenerated"
    assert _tree_bytes(out) == before


def test_a_second_process_waits_for_the_cohort_being_written(tmp_path: Path) -> None:
    """Two runs started together on a fresh checkout: the second must not touch the first's
    half-written patients (it once removed them and the first failed), only wait and reuse."""
    import subprocess
    import sys
    import time

    out = tmp_path / "c"
    child = (
        "from lunglib import synthetic\nprint('ready', flush=True)\n"
        f"synthetic.ensure_cohort({str(out)!r}, n_patients=2, seed=4, matrix=48, workers=1, "
        "progress=True)\nprint('done', flush=True)\n"
    )
    with _writer_lock(out):  # this process is the writer that got there first
        second = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert second.stdout.readline().strip() == "ready"
        time.sleep(3.0)  # the tiny cohort takes about a second to write
        assert second.poll() is None, "the second process did not wait for the first"
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # it wrote nothing
        _write_cohort(out, 2, 4, 48, 0.5, 0.5, 1, False)
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert second.wait(timeout=120) == 0
    assert second.stdout.read().strip() == "done"
    # It said why it waited (naming the folder), and wrote no progress bar: it generated nothing.
    said = second.stderr.read().strip()
    assert said == f"synthetic cohort: waiting for another process that is writing {out}"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written


def test_ensure_cohort_generates_only_when_needed(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUNGLIB_HOME", str(tmp_path / "home"))
    out = synthetic.ensure_cohort(n_patients=2, seed=1, matrix=64, workers=1, progress=False)
    assert out == tmp_path / "home" / "synthetic"
    stamp = (out / "cohort.json").stat().st_mtime_ns
    again = synthetic.ensure_cohort(n_patients=2, seed=1, matrix=64, workers=1, progress=False)
    assert again == out and (out / "cohort.json").stat().st_mtime_ns == stamp
    synthetic.ensure_cohort(n_patients=3, seed=1, matrix=64, workers=1, progress=False)
    assert len(_read_csv(out / "labels.csv")) == 3
    synthetic.ensure_cohort(out, n_patients=2, seed=1, matrix=64, workers=1, progress=False)
    assert len(_read_csv(out / "labels.csv")) == 2
    assert not (out / "synth-0003").exists() and not (out / "ground_truth" / "synth-0003.npz"
                                                       ).exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_patients": 0}, "n_patients"), ({"seed": -1}, "seed"), ({"difficulty": 1.5},
     "difficulty"), ({"matrix": 8}, "matrix"), ({"cancer_fraction": 2.0}, "cancer_fraction")],
)
def test_bad_parameters_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic.write_cohort(tmp_path / "c", progress=False, **kwargs)
    assert not (tmp_path / "c").exists()


def test_missing_ground_truth_names_the_file(cohort: Path) -> None:
    with pytest.raises(FileNotFoundError, match="synth-9999.npz"):
        synthetic.load_ground_truth(cohort, "synth-9999")


def test_difficulty_moves_malignant_and_benign_sizes_together() -> None:
    easy = synthetic.NoduleRanges.from_difficulty(0.0)
    hard = synthetic.NoduleRanges.from_difficulty(1.0)
    assert easy.malignant_diameter[0] > easy.benign_diameter[1]  # no size overlap when easy
    assert hard.malignant_diameter[0] < hard.benign_diameter[1]  # overlapping sizes when hard
    assert hard.noise_hu > easy.noise_hu
    assert hard.part_solid_probability > easy.part_solid_probability


def test_default_malignant_nodules_survive_the_course_resolution(tmp_path: Path) -> None:
    """At the course's (32, 64, 64) lung box a default malignant nodule is a blob, not a voxel."""
    from lunglib.datasets.synthetic import SyntheticDataset
    from lunglib.preprocess import prepare

    out = synthetic.write_cohort(tmp_path / "c", n_patients=2, seed=SEED, workers=1,
                                 cancer_fraction=1.0, progress=False)
    dataset = SyntheticDataset(out)
    ranges = synthetic.NoduleRanges.from_difficulty(0.5)
    for pid in dataset.patient_ids():
        scan = dataset.load_scan(pid)
        truth = synthetic.load_ground_truth(out, pid)
        prepared = prepare(scan, nodule_mask=truth["nodule_labels"])
        assert prepared.image.shape == (32, 64, 64)
        for row in truth["nodules"]:
            voxels = int((prepared.nodule_mask == row["nodule"]).sum())
            if row["malignant"]:
                assert ranges.malignant_diameter[0] <= row["diameter_mm"]
                assert voxels >= 27, f"{pid} nodule {row['nodule']}: {voxels} voxels"
                # brighter than the lung around it (windowed to [0, 1])
                inside = prepared.image[prepared.nodule_mask == row["nodule"]].mean()
                assert inside > prepared.image[prepared.lung_mask > 0].mean() + 0.15
            else:
                assert row["diameter_mm"] <= 10.0


def test_one_ground_truth_reader_for_the_dataset_and_load_ground_truth(
    cohort: Path, patient_ids: list[str], scans: dict, tmp_path: Path
) -> None:
    """SyntheticDataset reads the masks through lunglib.synthetic's reader: same arrays, same
    checks (no ground truth, a missing mask, a mask shaped unlike the scan)."""
    import shutil

    from lunglib.datasets import SyntheticDataset

    pid = patient_ids[0]
    scan = scans[pid]
    truth = synthetic.load_ground_truth(cohort, pid, shape=scan.shape)
    ds = SyntheticDataset(cohort)
    np.testing.assert_array_equal(ds.nodule_mask(pid, scan), truth["nodule_labels"])
    np.testing.assert_array_equal(ds.lung_mask(pid, scan), truth["lung_mask"])
    np.testing.assert_array_equal(synthetic.ground_truth_array(cohort, pid, "lung_mask"),
                                  truth["lung_mask"])
    assert ds.ground_truth_path(pid) == cohort / "ground_truth" / f"{pid}.npz"
    assert ds.nodule_mask("synth-9999", scan) is None  # the dataset: no mask for this patient
    assert ds.lung_mask("synth-9999") is None

    # A copy of the cohort whose lung mask lost a slice: regenerated under its scans.
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / pid).symlink_to(cohort / pid)
    shutil.copy(cohort / "labels.csv", copy / "labels.csv")
    npz_path, record_path = synthetic.ground_truth_paths(copy, pid)
    npz_path.parent.mkdir()
    shutil.copy(cohort / "ground_truth" / f"{pid}.json", record_path)
    np.savez(npz_path, nodule_labels=truth["nodule_labels"], lung_mask=truth["lung_mask"][1:])
    ds = SyntheticDataset(copy)
    np.testing.assert_array_equal(ds.nodule_mask(pid, scan), truth["nodule_labels"])
    short = f"lung_mask has shape {truth['lung_mask'][1:].shape} but the scan has {scan.shape}"
    with pytest.raises(ValueError, match=re.escape(short)):
        ds.lung_mask(pid, scan)
    with pytest.raises(ValueError, match=re.escape(short)):
        synthetic.load_ground_truth(copy, pid, shape=scan.shape)
    assert ds.lung_mask(pid).shape == truth["lung_mask"][1:].shape  # no scan: nothing to check
    assert synthetic.load_ground_truth(copy, pid)["cancer"] == truth["cancer"]

    np.savez(npz_path, nodule_labels=truth["nodule_labels"])  # no lung mask at all
    with pytest.raises(ValueError, match="no 'lung_mask' array"):
        ds.lung_mask(pid, scan)
    with pytest.raises(ValueError, match="no 'lung_mask' array"):
        synthetic.load_ground_truth(copy, pid)
