"""The preprocessing cache: parallel, atomic, resumable, with a QC table; and streaming from it.

Preparing on Dask (worker deaths, two clients, byte-identical caches) is in test_dask_prepare.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lunglib.datasets import SyntheticDataset
from lunglib.io.dicom import DicomLoadError
from lunglib.preprocess import CacheIndex, PrepareOptions, cache_dataset, cache_key
from lunglib.preprocess.cache import STALE_AFTER_S, remove_stale_files
from lunglib.settings import Settings

REPO = Path(__file__).resolve().parents[1]


class CohortWithBrokenScan(SyntheticDataset):
    """The synthetic cohort plus one patient whose DICOM cannot be read."""

    def patient_ids(self):
        return sorted([*super().patient_ids(), "broken-01"])

    def load_scan(self, patient_id):
        if patient_id == "broken-01":
            raise DicomLoadError(f"{self.root / 'broken-01' / 'x.dcm'}: not a DICOM file")
        return super().load_scan(patient_id)

    def label(self, patient_id):
        return None if patient_id == "broken-01" else super().label(patient_id)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from lunglib.synthetic import write_cohort

    return write_cohort(tmp_path_factory.mktemp("synth"), n_patients=3, seed=5, workers=1,
                        progress=False)


def _arrays(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as data:
            out[path.stem] = {k: data[k] for k in data.files if k != "qc_row"}
    return out


SMALL = {"size": 32, "n_slices": 16}


def test_cache_in_parallel_records_every_patient(cohort, tmp_path):
    dataset = CohortWithBrokenScan(cohort)
    settings = Settings(cache_dir=tmp_path, **SMALL)
    index = cache_dataset(dataset, settings, workers=2, progress=False)
    assert index.folder == tmp_path / cache_key(dataset, settings)
    assert index.ids == SyntheticDataset(cohort).patient_ids()
    assert set(index.skipped) == {"broken-01"}
    assert "not a DICOM file" in index.skipped["broken-01"]
    table = index.qc_table()
    assert sorted(table["id"]) == dataset.patient_ids()
    assert set(table["status"]) == {"ok", "skipped"}
    assert not list(index.folder.glob("*.tmp"))
    first = index.load(index.ids[0])
    assert first["image"].shape == first["lung_mask"].shape == first["nodule_mask"].shape
    assert first["image"].shape == (16, 32, 32)
    assert int(first["label"]) == dataset.label(index.ids[0])
    assert index.labels() == SyntheticDataset(cohort).labels()
    with pytest.raises(KeyError, match="not a DICOM file"):
        index.load("broken-01")


def test_loops_over_scans_skip_and_name_an_unreadable_one(cohort):
    # what notebooks 01, 02 and 06 loop with: one broken scan is listed with its reason (naming
    # the file), and every readable one is still given
    dataset = CohortWithBrokenScan(cohort)
    skipped: dict[str, str] = {}
    loaded = [pid for pid, _ in dataset.scans(skipped=skipped)]
    assert loaded == ["synth-0001", "synth-0002", "synth-0003"]
    assert list(skipped) == ["broken-01"] and "x.dcm" in skipped["broken-01"]

    from lunglib.recipes.whole_scan import load_cases

    skipped = {}
    cases = load_cases(dataset, dataset.patient_ids(), skipped=skipped)
    assert "broken-01" in skipped and "broken-01" not in cases
    with_masks = [pid for pid in loaded if dataset.nodule_mask(pid, dataset.load_scan(pid))
                  is not None]
    assert sorted(cases) == with_masks


def test_cache_key_follows_what_shapes_the_volumes(cohort, tmp_path):
    dataset = SyntheticDataset(cohort)
    base = Settings(cache_dir=tmp_path, **SMALL)
    key = cache_key(dataset, base)
    assert cache_key(dataset, base.replace(seed=7)) == key  # the seed does not shape volumes
    assert cache_key(dataset, base.replace(size=48)) != key
    assert cache_key(dataset, base, PrepareOptions(window=(-1200, 600))) != key


def test_corrected_labels_take_effect_without_preparing_again(cohort, tmp_path):
    # labels do not shape the volumes, so they are not in the key: a rerun after the labels file
    # was corrected must give the corrected labels, from load() and labels(), and reuse the arrays
    import shutil

    copy = tmp_path / "cohort"
    shutil.copytree(cohort, copy)
    settings = Settings(cache_dir=tmp_path / "cache", **SMALL)
    first = cache_dataset(SyntheticDataset(copy), settings, workers=1, progress=False)
    before = first.labels()
    assert before and len(set(before.values())) == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in first.folder.glob("*.npz")}

    lines = (copy / "labels.csv").read_text().splitlines()
    flipped = [lines[0]] + [f"{pid},{1 - int(value)}" for pid, value in
                            (line.split(",") for line in lines[1:])]
    (copy / "labels.csv").write_text("\n".join(flipped) + "\n")
    second = cache_dataset(SyntheticDataset(copy), settings, workers=1, progress=False)

    assert second.folder == first.folder
    assert second.labels() == {pid: 1 - value for pid, value in before.items()}
    for pid, value in before.items():
        assert int(second.load(pid)["label"]) == 1 - value
    assert {p.name: p.stat().st_mtime_ns for p in second.folder.glob("*.npz")} == stamps
    assert second.qc_table().set_index("id").loc[list(before), "label"].tolist() == \
        [1 - v for v in before.values()]


def test_an_annotation_file_edited_in_place_prepares_that_patient_again(cohort, tmp_path):
    # the nodule masks are drawn from per-patient annotation files: a corrected file must not
    # leave the old mask in the cache, and the other patients are not prepared again
    import shutil

    from lunglib.synthetic import ground_truth_paths

    copy = tmp_path / "cohort"
    shutil.copytree(cohort, copy)
    settings = Settings(cache_dir=tmp_path / "cache", **SMALL)
    first = cache_dataset(SyntheticDataset(copy), settings, workers=1, progress=False)
    edited = next(pid for pid in first.ids if first.load(pid)["nodule_mask"].any())
    stamps = {p.name: p.stat().st_mtime_ns for p in first.folder.glob("*.npz")}

    truth_file = ground_truth_paths(copy, edited)[0]
    with np.load(truth_file) as data:
        truth = {k: data[k] for k in data.files}
    truth["nodule_labels"] = np.zeros_like(truth["nodule_labels"])  # "no nodule after all"
    np.savez_compressed(truth_file, **truth)
    second = cache_dataset(SyntheticDataset(copy), settings, workers=1, progress=False)

    assert second.folder == first.folder
    assert not second.load(edited)["nodule_mask"].any()
    again = {p.name: p.stat().st_mtime_ns for p in second.folder.glob("*.npz")}
    assert {name for name in stamps if again[name] != stamps[name]} == {f"{edited}.npz"}
    assert "annotations" not in second.load(edited)  # the digest is bookkeeping, not an array


def test_lidc_annotation_fingerprint_follows_the_readers_xml(tmp_path):
    from lunglib.datasets.lidc import LIDCDataset

    series = tmp_path / "lidc" / "LIDC-IDRI-0009" / "study" / "series"
    series.mkdir(parents=True)
    (series / "069.xml").write_text("<LidcReadMessage>reader one</LidcReadMessage>")
    dataset = LIDCDataset(tmp_path / "lidc")
    before = dataset.annotation_fingerprint("LIDC-IDRI-0009")
    assert len(before) == 16
    (series / "069.xml").write_text("<LidcReadMessage>reader one, corrected</LidcReadMessage>")
    assert dataset.annotation_fingerprint("LIDC-IDRI-0009") != before


def test_lung_pet_ct_dx_annotation_fingerprint_follows_the_box_files(tmp_path):
    # the boxes choose which series is loaded, so an edited box file must prepare again
    from lunglib.datasets.lung_pet_ct_dx import LungPETCTDxDataset

    (tmp_path / "Lung-PET-CT-Dx" / "Lung_Dx-A0001").mkdir(parents=True)
    boxes = tmp_path / "Annotation" / "A0001"
    boxes.mkdir(parents=True)
    (boxes / "1.2.3.xml").write_text("<annotation><object/></annotation>")
    dataset = LungPETCTDxDataset(tmp_path)
    before = dataset.annotation_fingerprint("Lung_Dx-A0001")
    assert len(before) == 16 and dataset.annotation_fingerprint("Lung_Dx-A0002") == ""
    (boxes / "1.2.3.xml").write_text("<annotation><object/><object/></annotation>")
    assert dataset.annotation_fingerprint("Lung_Dx-A0001") != before


def test_lidc_reader_consensus_is_in_the_cache_key(tmp_path):
    # the nodule masks of LIDC-IDRI depend on how many readers must agree: another consensus
    # must never read masks prepared under the old one
    from lunglib.datasets.lidc import LIDCDataset

    (tmp_path / "lidc").mkdir()
    settings = Settings(cache_dir=tmp_path / "cache", **SMALL)
    half = cache_key(LIDCDataset(tmp_path / "lidc"), settings)
    assert cache_key(LIDCDataset(tmp_path / "lidc", consensus_fraction=0.5), settings) == half
    assert cache_key(LIDCDataset(tmp_path / "lidc", consensus_fraction=0.75), settings) != half
    # the label thresholds do not change the arrays: the labels are read again instead
    assert cache_key(LIDCDataset(tmp_path / "lidc", malignant_min=5), settings) == half


def test_cache_run_killed_midway_resumes_to_the_same_files(cohort, tmp_path):
    dataset = SyntheticDataset(cohort)
    reference = cache_dataset(dataset, Settings(cache_dir=tmp_path / "whole", **SMALL),
                              workers=1, progress=False)
    interrupted = tmp_path / "interrupted"
    script = textwrap.dedent(f"""
        from lunglib.preprocess.cache import cache_dataset
        from lunglib.datasets import SyntheticDataset
        from lunglib.settings import Settings
        cache_dataset(SyntheticDataset({str(cohort)!r}),
                      Settings(cache_dir={str(interrupted)!r}, size=32, n_slices=16),
                      workers=1, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    folder = interrupted / reference.key
    try:
        deadline = time.monotonic() + 120
        while not list(folder.glob("*.npz")):
            assert proc.poll() is None, "the cache run finished before it could be interrupted"
            assert time.monotonic() < deadline, "no cached file appeared within 120 s"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    assert 1 <= len(done_before) < len(dataset.patient_ids())
    _arrays(folder)  # every finished file loads

    # stale_after=0: the explicit cleanup (nothing else writes here), so that a temporary the
    # killed run may have left goes too
    resumed = cache_dataset(dataset, Settings(cache_dir=interrupted, **SMALL), workers=1,
                            progress=False, stale_after=0)
    assert resumed.ids == reference.ids
    # finished files were kept, not prepared again
    assert {n: (folder / n).stat().st_mtime_ns for n in done_before} == done_before
    assert not list(folder.glob("*.tmp*"))
    expected, got = _arrays(reference.folder), _arrays(folder)
    assert expected.keys() == got.keys()
    for pid in expected:
        assert expected[pid].keys() == got[pid].keys()
        for name in expected[pid]:
            np.testing.assert_array_equal(got[pid][name], expected[pid][name], err_msg=pid)
    assert resumed.qc_table().equals(reference.qc_table())


def test_leftovers_of_killed_writers_go_by_age_never_by_process_id(cohort, tmp_path):
    # the cache folder may be shared by hosts whose process ids mean nothing here: a fresh
    # temporary named after a pid dead on this host may be another host's live write, and stays
    dataset = SyntheticDataset(cohort)
    settings = Settings(cache_dir=tmp_path, **SMALL)
    folder = tmp_path / cache_key(dataset, settings)
    folder.mkdir()
    fresh = [folder / "synth-0001.npz.999999999.tmp",  # lunglib's naming before 2026-12
             folder / "synth-0002.npz.node-b.0123456789abcdef.tmp"]
    stale = [folder / "synth-0003.npz.node-c.fedcba9876543210.tmp",
             folder / ".synth-0003.running"]  # the marker of an older lunglib's pool
    for path in fresh + stale:
        path.write_bytes(b"")
    hours_ago = time.time() - 2 * STALE_AFTER_S
    for path in stale:
        os.utime(path, (hours_ago, hours_ago))
    index = cache_dataset(dataset, settings, workers=1, progress=False)
    assert index.ids == dataset.patient_ids()
    assert [p.exists() for p in fresh + stale] == [True, True, False, False]
    assert remove_stale_files(folder, 0) == 2
    assert not list(folder.glob("*.tmp*"))


def test_open_needs_a_qc_table(tmp_path):
    with pytest.raises(FileNotFoundError, match="cache_dataset"):
        CacheIndex.open(tmp_path)


@pytest.mark.slow
def test_make_dataset_streams_batches_and_refuses_augmented_validation(cohort, tmp_path):
    from lunglib.augment.transforms import default_augmentation
    from lunglib.training import make_dataset

    index = cache_dataset(SyntheticDataset(cohort), Settings(cache_dir=tmp_path, **SMALL),
                          workers=1, progress=False)
    with pytest.raises(ValueError, match="training split only"):
        make_dataset(index, index.ids, "val", augment=default_augmentation())
    labels = index.labels()
    ds = make_dataset(index, index.ids, "test", batch_size=2)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [2, 1]
    assert batches[0][0].shape[1:] == (16, 32, 32, 1)
    got = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(got, [labels[pid] for pid in index.ids])
    first = index.load(index.ids[0])["image"]
    np.testing.assert_allclose(batches[0][0].numpy()[0, ..., 0], first)
    # segmentation targets, augmented, stay binary and the same shape
    seg = make_dataset(index, index.ids, "train", batch_size=3, target="lung_mask",
                       augment=default_augmentation(), seed=1)
    image, mask = next(iter(seg))
    assert mask.shape == image.shape == (3, 16, 32, 32, 1)
    assert set(np.unique(mask.numpy())) <= {0.0, 1.0}
