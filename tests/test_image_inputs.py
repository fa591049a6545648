"""One-file volumes (NIfTI, NRRD, MetaImage) in: the same scan as its DICOM series, everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lunglib.io import DicomLoadError, load_scan


@pytest.fixture(scope="module")
def lidc_scan(lidc_case_dir: Path):
    return load_scan(lidc_case_dir)


@pytest.mark.parametrize(("name", "fmt"), [("case.nii.gz", "NIfTI"), ("case.nrrd", "NRRD"),
                                           ("case.mha", "MetaImage"), ("case.mhd", "MetaImage")])
def test_a_volume_file_loads_as_the_dicom_series_it_was_written_from(lidc_scan, tmp_path,
                                                                     name, fmt):
    import SimpleITK as sitk

    path = tmp_path / name
    sitk.WriteImage(lidc_scan.to_sitk(), str(path))
    scan = load_scan(path)
    np.testing.assert_array_equal(scan.hu, lidc_scan.hu)
    np.testing.assert_allclose(scan.spacing, lidc_scan.spacing, rtol=1e-6)
    np.testing.assert_allclose(scan.origin, lidc_scan.origin, atol=1e-4)
    np.testing.assert_allclose(scan.direction, lidc_scan.direction, atol=1e-6)
    assert scan.metadata["format"] == fmt
    assert scan.patient_key != "case" and scan.patient_key.startswith("pt-")  # a pseudonym
    # the same world point lands on the same voxel
    world = lidc_scan.voxel_to_world(np.array([40.0, 300.0, 200.0]))
    np.testing.assert_allclose(scan.world_to_voxel(world), [40.0, 300.0, 200.0], atol=1e-3)


def test_a_broken_volume_file_is_named_with_the_reason(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(DicomLoadError, match="empty.nii.gz: SimpleITK could not read it"):
        load_scan(tmp_path / "empty.nii.gz")
    (tmp_path / "scan.mhd").write_text("NDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
                                       "ElementDataFile = scan.raw\n")
    with pytest.raises(DicomLoadError, match=r"scan.mhd: .*\.raw file"):
        load_scan(tmp_path / "scan.mhd")


@pytest.mark.slow
def test_predict_and_load_take_a_nifti_file_and_answer_as_for_the_dicom(lidc_scan,
                                                                        lidc_case_dir: Path,
                                                                        tmp_path: Path,
                                                                        capsys) -> None:
    import SimpleITK as sitk

    from lunglib.cli import main
    from lunglib.models.bundle import save_bundle
    from lunglib.models.cnn import build_cnn
    from lunglib.training import set_seed

    set_seed(0)
    save_bundle(build_cnn((8, 16, 16, 1), n_conv_layers=2, filters=4, dense_units=8),
                tmp_path / "run", "classifier", dataset="lidc", size=16, n_slices=8,
                threshold=0.5)
    nifti = tmp_path / "case.nii.gz"
    sitk.WriteImage(lidc_scan.to_sitk(), str(nifti))
    answers = {}
    for name, source in (("dicom", lidc_case_dir), ("nifti", nifti)):
        assert main(["predict", str(source), "--model", str(tmp_path / "run"),
                     "--output", str(tmp_path / name)]) == 0
        answers[name] = json.loads((tmp_path / name / "prediction.json").read_text())
    assert answers["nifti"]["cancer_probability"] == pytest.approx(
        answers["dicom"]["cancer_probability"], abs=1e-6)
    assert answers["nifti"]["warnings"] == [] == answers["dicom"]["warnings"]  # real on real
    assert (tmp_path / "nifti" / "lungs.nii.gz").is_file()
    capsys.readouterr()
    assert main(["load", str(nifti)]) == 0
    shown = capsys.readouterr().out
    assert "NIfTI" in shown and "case" not in shown.replace("nii", "")


@pytest.mark.slow
def test_a_batch_folder_survives_a_broken_scan_and_splits_into_parts(lidc_scan, lidc_case_dir,
                                                                      tmp_path, capsys) -> None:
    import SimpleITK as sitk

    from lunglib.cli import main
    from lunglib.models.bundle import save_bundle
    from lunglib.models.cnn import build_cnn

    save_bundle(build_cnn((8, 16, 16, 1), n_conv_layers=2, filters=4, dense_units=8),
                tmp_path / "run", "classifier", dataset="lidc", size=16, n_slices=8,
                threshold=0.5)
    batch = tmp_path / "batch"
    batch.mkdir()
    for name, start in (("a", 30), ("b", 60)):  # two 30-slice volumes of the real scan
        sitk.WriteImage(lidc_scan.to_sitk()[:, :, start:start + 30], str(batch / f"{name}.nii.gz"))
    (batch / "broken.nii.gz").write_bytes(b"not a volume")
    (batch / "dicom_case").symlink_to(lidc_case_dir, target_is_directory=True)
    (batch / "notes.csv").write_text("not a scan\n")

    out = tmp_path / "out"
    assert main(["predict", str(batch), "--batch", "--model", str(tmp_path / "run"),
                 "--output", str(out)]) == 1  # one scan failed, the others went on
    captured = capsys.readouterr()
    assert "3 of 4 scan(s) predicted" in captured.out
    assert "failed: broken: " in captured.err and "broken.nii.gz" in captured.err
    summary = __import__("pandas").read_csv(out / "summary.csv")
    assert summary["scan"].tolist() == ["a", "b", "broken", "dicom_case"]
    assert summary["status"].tolist() == ["ok", "ok", "failed", "ok"]
    assert summary.loc[summary.status == "ok", "cancer_probability"].between(0, 1).all()
    for name in ("a", "b", "dicom_case"):
        assert (out / name / "prediction.json").is_file()

    from lunglib.predict import predict_batch

    parts = [predict_batch(batch, tmp_path / "run", tmp_path / "parts", num_parts=2,
                           part_id=k, progress=False) for k in (0, 1)]
    assert [p["scan"].tolist() for p in parts] == [["a", "broken"], ["b", "dicom_case"]]
    assert (tmp_path / "parts" / "summary_part1of2.csv").is_file()
    np.testing.assert_allclose(  # the same answers as the whole run
        parts[1].set_index("scan").loc[["b", "dicom_case"], "cancer_probability"],
        summary.set_index("scan").loc[["b", "dicom_case"], "cancer_probability"], atol=1e-6)
    with pytest.raises(ValueError, match="part_id"):
        predict_batch(batch, tmp_path / "run", tmp_path / "x", num_parts=2, part_id=2)
