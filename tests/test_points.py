"""lunglib.datasets.points: nodule locations from annotation files, in a given scan's grid.

Real data from ../shared/data (the conftest fixtures skip where it is absent): LIDC-IDRI-0001
with its readers' XML, and Lung-PET-CT-Dx A0002 with its VOC boxes. The expected values are
computed through independent paths: the dataset adapters' masks, and the scan's own geometry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lunglib import load_scan
from lunglib.datasets import (
    AnnotationPoints,
    LIDCDataset,
    LungPETCTDxDataset,
    parse_point,
    read_annotation_points,
)
from lunglib.datasets.lung_pet_ct_dx import PATIENT_PREFIX
from lunglib.io.geometry import sphere_diameter_mm

LIDC_PID = "LIDC-IDRI-0001"
POSITION = ["z", "y", "x", "x_mm", "y_mm", "z_mm", "diameter_mm"]


@pytest.fixture(scope="module")
def lidc(lidc_case_dir):
    """The LIDC case loaded once: the dataset (independent path), its scan, the XML, the points."""
    ds = LIDCDataset(lidc_case_dir.parent)
    scan = ds.load_scan(LIDC_PID)
    xml = next(lidc_case_dir.rglob("*.xml"))
    return {"ds": ds, "scan": scan, "xml": xml, "points": read_annotation_points(xml, scan),
            "mask": ds.nodule_mask(LIDC_PID, scan)}


@pytest.fixture(scope="module")
def lidc_nifti(lidc, tmp_path_factory):
    """The same scan exported to NIfTI and read back: no SOPInstanceUIDs any more."""
    path = tmp_path_factory.mktemp("nifti") / "case.nii"
    sitk.WriteImage(lidc["scan"].to_sitk(), str(path))
    return load_scan(path)


@pytest.fixture(scope="module")
def pet(pet_ct_dx_dir):
    ds = LungPETCTDxDataset(pet_ct_dx_dir)
    pid = ds.patient_ids()[0]
    scan = ds.load_scan(pid)  # the CT series holding most boxes
    folder = pet_ct_dx_dir / "Annotation" / pid.removeprefix(PATIENT_PREFIX)
    return {"ds": ds, "pid": pid, "scan": scan, "folder": folder,
            "points": read_annotation_points(folder, scan)}


def _no_identifiers(points: AnnotationPoints) -> None:
    text = points.table.to_csv(index=False)
    assert LIDC_PID not in text and "A0002" not in text
    assert "1.3.6.1.4.1" not in text  # no series / SOP instance UIDs either
    assert not [c for c in points.table.columns if "uid" in c.lower() or "patient" in c.lower()]


# --------------------------------------------------------------------------------------------
# LIDC XML


def test_lidc_xml_on_the_dicom_scan_matches_the_dataset_masks(lidc):
    points, scan, mask = lidc["points"], lidc["scan"], lidc["mask"]
    assert points.kind == "lidc_xml"
    assert len(points) == 1  # LIDC-IDRI-0001 has one nodule >= 3 mm
    row = points.table.iloc[0]
    assert int(row["nodule"]) == 1
    expected = np.argwhere(mask == 1).mean(axis=0)
    np.testing.assert_allclose(row[["z", "y", "x"]].to_numpy(float), expected, atol=1e-6)
    np.testing.assert_allclose(row[["x_mm", "y_mm", "z_mm"]].to_numpy(float),
                               scan.voxel_to_world(expected), atol=1e-6)
    np.testing.assert_array_equal(points.labels, mask)
    assert points.labels.dtype == np.int16
    volume = int((mask == 1).sum()) * scan.voxel_volume_mm3
    assert row["diameter_mm"] == pytest.approx(sphere_diameter_mm(volume), abs=1e-9)
    assert 10 < row["diameter_mm"] < 40
    # where ../shared/data/README.md puts it: x,y ~ (316, 367), z -125..-105 mm
    assert abs(row["x"] - 316) < 5 and abs(row["y"] - 367) < 5
    assert -125 <= row["z_mm"] <= -105
    assert row["n_readers"] == 4
    assert row["malignancy_by_reader"] == "5,5,5,4"
    assert row["median_malignancy"] == 5.0
    assert any("< 3 mm" in note for note in points.notes)  # the small marks were left out, said so
    _no_identifiers(points)


def test_lidc_consensus_fraction_is_the_datasets(lidc, lidc_case_dir):
    strict = read_annotation_points(lidc["xml"], lidc["scan"], consensus_fraction=1.0)
    ds = LIDCDataset(lidc_case_dir.parent, consensus_fraction=1.0)
    np.testing.assert_array_equal(strict.labels, ds.nodule_mask(LIDC_PID, lidc["scan"]))
    assert 0 < (strict.labels > 0).sum() < (lidc["points"].labels > 0).sum()
    with pytest.raises(ValueError, match="consensus_fraction"):
        read_annotation_points(lidc["xml"], lidc["scan"], consensus_fraction=0)


def test_lidc_xml_on_a_nifti_export_places_outlines_by_z_position(lidc, lidc_nifti):
    assert not any(lidc_nifti.slice_uids)  # no SOPInstanceUIDs: only z positions can place them
    assert lidc_nifti.metadata.get("format") == "NIfTI"
    points = read_annotation_points(lidc["xml"], lidc_nifti)
    assert points.kind == "lidc_xml"
    np.testing.assert_array_equal(points.labels, lidc["points"].labels)
    pd.testing.assert_frame_equal(points.table, lidc["points"].table, check_exact=False,
                                  atol=1e-6, rtol=0)
    assert not [n for n in points.notes if "slice" in n]  # every outline found its slice


# --------------------------------------------------------------------------------------------
# Lung-PET-CT-Dx VOC boxes


def test_voc_box_folder_on_its_dicom_series(pet):
    points, scan, ds = pet["points"], pet["scan"], pet["ds"]
    assert points.kind == "voc_boxes"
    assert len(points) >= 1
    box_mask = ds.box_mask(pet["pid"], scan)
    np.testing.assert_array_equal(points.labels > 0, box_mask > 0)
    for row in points.table.itertuples(index=False):
        centre = tuple(int(round(v)) for v in (row.z, row.y, row.x))
        assert points.labels[centre] == row.nodule  # the centre lies in the tumour's boxes
        expected = np.argwhere(points.labels == row.nodule).mean(axis=0)
        np.testing.assert_allclose([row.z, row.y, row.x], expected, atol=1e-9)
        np.testing.assert_allclose([row.x_mm, row.y_mm, row.z_mm],
                                   scan.voxel_to_world(expected), atol=1e-6)
    boxes = ds.boxes(pet["pid"], scan)
    in_scan = boxes[boxes["in_scan"]]
    assert points.table["n_boxes"].sum() == len(in_scan)
    assert set(points.table["class"]) == {"A"}
    assert points.table["diameter_mm"].isna().all()  # boxes are not outlines
    widest = ((in_scan[["xmax", "ymax"]].to_numpy() - in_scan[["xmin", "ymin"]].to_numpy() + 1)
              * np.array([scan.spacing[2], scan.spacing[1]])).max()
    assert points.table["box_long_side_mm"].max() == pytest.approx(widest)
    # the boxes drawn on the other reconstruction are left out, and the notes say how many
    n_other = int((~boxes["in_scan"]).sum())
    assert n_other > 0 and any(note.startswith(f"{n_other} box file(s)") for note in points.notes)
    _no_identifiers(points)


def test_voc_single_file_and_a_scan_without_slice_uids(pet, lidc_nifti):
    scan = pet["scan"]
    k = next(i for i, uid in enumerate(scan.slice_uids) if (pet["folder"] / f"{uid}.xml").exists())
    one = read_annotation_points(pet["folder"] / f"{scan.slice_uids[k]}.xml", scan)
    assert one.kind == "voc_boxes" and len(one) == 1
    assert set(np.unique(np.nonzero(one.labels)[0])) == {k}  # on the slice the file names
    assert one.table.loc[0, "n_slices"] == 1
    with pytest.raises(ValueError, match="SOPInstanceUID.*DICOM series"):
        read_annotation_points(pet["folder"], lidc_nifti)


# --------------------------------------------------------------------------------------------
# LUNA16 and point CSVs


def test_luna16_csv_keeps_the_rows_of_the_scans_series(lidc, tmp_path):
    scan = lidc["scan"]
    voxels = np.array([[40.0, 300.5, 200.25], [100.0, 150.0, 350.0]])  # (z, y, x)
    xyz = scan.voxel_to_world(voxels)
    frame = pd.DataFrame({
        "seriesuid": [scan.series_uid, "1.2.3.4.5", scan.series_uid],
        "coordX": [xyz[0, 0], 10.0, xyz[1, 0]], "coordY": [xyz[0, 1], 10.0, xyz[1, 1]],
        "coordZ": [xyz[0, 2], -100.0, xyz[1, 2]], "diameter_mm": [6.5, 9.0, 12.25],
    })
    frame.to_csv(tmp_path / "annotations.csv", index=False)
    points = read_annotation_points(tmp_path / "annotations.csv", scan)
    assert points.kind == "luna16_csv" and points.labels is None
    assert points.table["nodule"].tolist() == [1, 2]
    np.testing.assert_allclose(points.table[["z", "y", "x"]].to_numpy(),
                               scan.world_to_voxel(xyz), atol=1e-9)
    np.testing.assert_allclose(points.table[["z", "y", "x"]].to_numpy(), voxels, atol=1e-6)
    np.testing.assert_allclose(points.table[["x_mm", "y_mm", "z_mm"]].to_numpy(), xyz)
    assert points.table["diameter_mm"].tolist() == [6.5, 12.25]
    _no_identifiers(points)

    frame[frame["seriesuid"] == "1.2.3.4.5"].to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match=f"seriesuid {scan.series_uid}"):
        read_annotation_points(tmp_path / "other.csv", scan)


def test_luna16_csv_matches_a_volume_file_by_its_name(tmp_path):
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.999"
    image = sitk.GetImageFromArray(np.full((6, 20, 24), -800, dtype=np.int16))
    image.SetSpacing((0.8, 0.7, 2.5))
    image.SetOrigin((-10.0, 20.0, -300.0))
    sitk.WriteImage(image, str(tmp_path / f"{uid}.mha"))
    scan = load_scan(tmp_path / f"{uid}.mha")
    xyz = scan.voxel_to_world([3.0, 10.0, 12.0])
    (tmp_path / "a.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n"
                                    f"{uid},{xyz[0]},{xyz[1]},{xyz[2]},5\n")
    points = read_annotation_points(tmp_path / "a.csv", scan)
    np.testing.assert_allclose(points.table.loc[0, ["z", "y", "x"]].to_numpy(float),
                               [3.0, 10.0, 12.0], atol=1e-9)


def test_points_csv_in_mm_and_in_voxels(lidc, tmp_path):
    scan = lidc["scan"]
    voxels = np.array([[60.0, 250.0, 120.5], [10.25, 400.0, 300.0]])  # (z, y, x)
    xyz = scan.voxel_to_world(voxels)
    mm = pd.DataFrame({"x_mm": xyz[:, 0], "y_mm": xyz[:, 1], "z_mm": xyz[:, 2],
                       "diameter_mm": [8.0, 14.0], "name": ["left", "right"]})
    mm.to_csv(tmp_path / "mm.csv", index=False)
    by_mm = read_annotation_points(tmp_path / "mm.csv", scan)
    assert by_mm.kind == "points_csv" and by_mm.labels is None
    np.testing.assert_allclose(by_mm.table[["z", "y", "x"]].to_numpy(), voxels, atol=1e-6)
    assert by_mm.table["diameter_mm"].tolist() == [8.0, 14.0]
    assert by_mm.table["name"].tolist() == ["left", "right"]

    # voxel columns are typed as viewers show them: x = column, y = row, z = slice
    (tmp_path / "vox.csv").write_text("x, y, z, label\n120.5,250,60,a\n300,400,10.25,b\n")
    by_voxel = read_annotation_points(tmp_path / "vox.csv", scan)
    np.testing.assert_allclose(by_voxel.table[["z", "y", "x"]].to_numpy(), voxels)
    np.testing.assert_allclose(by_voxel.table[["x_mm", "y_mm", "z_mm"]].to_numpy(), xyz,
                               atol=1e-6)
    assert by_voxel.table["diameter_mm"].isna().all()
    assert by_voxel.table["label"].tolist() == ["a", "b"]

    # the table written out reads back as the same points
    by_voxel.table.to_csv(tmp_path / "again.csv", index=False)
    again = read_annotation_points(tmp_path / "again.csv", scan)
    np.testing.assert_allclose(again.table[POSITION[:6]].to_numpy(),
                               by_voxel.table[POSITION[:6]].to_numpy(), atol=1e-6)

    (tmp_path / "out.csv").write_text("x,y,z\n10,10,10\n600,10,10\n")
    with pytest.raises(ValueError, match=r"outside the scan \(data row\(s\) 2\).*x 0\.\.511"):
        read_annotation_points(tmp_path / "out.csv", scan)
    (tmp_path / "cols.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="x_mm,y_mm,z_mm.*found"):
        read_annotation_points(tmp_path / "cols.csv", scan)
    (tmp_path / "text.csv").write_text("x,y,z\n1,two,3\n")
    with pytest.raises(ValueError, match="column 'y'"):
        read_annotation_points(tmp_path / "text.csv", scan)


def test_parse_point_round_trips_and_names_bad_text(lidc):
    scan = lidc["scan"]
    zyx = np.array([50.25, 100.5, 200.75])
    x, y, z = (float(v) for v in scan.voxel_to_world(zyx))
    got = parse_point(f" {x!r},  {y!r} ,{z!r}", scan)
    np.testing.assert_allclose(got, zyx, atol=1e-6)
    np.testing.assert_allclose(scan.voxel_to_world(got), [x, y, z], atol=1e-9)
    assert parse_point("200.75, 100.5, 50.25", scan, voxel=True) == (50.25, 100.5, 200.75)
    assert parse_point("0,0,0", scan, voxel=True) == (0.0, 0.0, 0.0)

    for bad in ("1,2", "a,b,c", "1;2;3", "1,2,3,4", ""):
        with pytest.raises(ValueError, match="not three comma-separated numbers"):
            parse_point(bad, scan)
    with pytest.raises(ValueError, match=r"'1,2' is not three"):
        parse_point("1,2", scan)
    with pytest.raises(ValueError, match=r"'-1000,0,0' \(patient LPS mm\) lies outside the "
                                         r"volume.*z 0\.\.132.*RAS"):
        parse_point("-1000,0,0", scan)
    with pytest.raises(ValueError, match=r"'600,10,10' \(voxel column,row,slice\) lies outside"):
        parse_point("600,10,10", scan, voxel=True)


# --------------------------------------------------------------------------------------------
# Files that are not annotations


def test_unknown_files_are_refused_by_name(lidc, tmp_path):
    scan = lidc["scan"]
    txt = tmp_path / "nodules.txt"
    txt.write_text("1,2,3\n")
    with pytest.raises(ValueError, match=r"nodules\.txt.*accepted.*LIDC.*PASCAL-VOC.*LUNA16"):
        read_annotation_points(txt, scan)
    other = tmp_path / "other.xml"
    other.write_text("<IdriReadMessage><x/></IdriReadMessage>")
    with pytest.raises(ValueError, match=r"other\.xml.*IdriReadMessage"):
        read_annotation_points(other, scan)
    broken = tmp_path / "broken.xml"
    broken.write_text("<annotation>")
    with pytest.raises(ValueError, match=r"broken\.xml.*not a readable XML"):
        read_annotation_points(broken, scan)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*without .xml"):
        read_annotation_points(tmp_path / "empty", scan)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_annotation_points(tmp_path / "missing.csv", scan)
