"""Preprocessing: resampling geometry, lung segmentation on real and synthetic CT, prepare()."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from lunglib.io.dicom import CTScan, load_scan
from lunglib.preprocess import (
    PrepareOptions,
    fit_zero_center,
    lung_volume_ml,
    prepare,
    resample_isotropic,
    segment_lungs,
    shrink_to,
    window,
    zero_center,
)
from lunglib.settings import Settings


def _scan(hu: np.ndarray, spacing=(2.0, 1.0, 1.0), direction=None, origin=(0.0, 0.0, 0.0)):
    return CTScan(hu=hu, spacing=spacing, origin=origin,
                  direction=np.eye(3) if direction is None else direction,
                  series_uid="1.2.3", patient_key="pt-test")


@pytest.fixture(scope="module")
def synthetic_cohort(tmp_path_factory):
    from lunglib.synthetic import write_cohort

    return write_cohort(tmp_path_factory.mktemp("synth"), n_patients=2, seed=3, workers=1,
                        progress=False)


@pytest.fixture(scope="module")
def lidc(lidc_case_dir):
    """The real LIDC-IDRI-0001 scan and its lung mask, segmented on a 2x in-plane copy."""
    scan = load_scan(lidc_case_dir)
    small = shrink_to(scan.to_sitk(), 1.4)
    hu = sitk.GetArrayFromImage(small)
    spacing = tuple(small.GetSpacing()[::-1])
    return scan, hu, spacing, segment_lungs(hu, spacing, scan.direction)


def test_resample_isotropic_preserves_physical_extent_and_position():
    spacing = (2.5, 0.7, 0.9)
    hu = np.full((40, 120, 100), -1000, np.int16)
    zz, yy, xx = np.indices(hu.shape)
    centre_mm = np.array([50.0, 40.0, 45.0])  # (z, y, x) mm from the first voxel centre
    dist = np.sqrt(sum((g * s - c) ** 2 for g, s, c in zip((zz, yy, xx), spacing, centre_mm,
                                                            strict=True)))
    hu[dist < 12.0] = 100
    out, out_spacing = resample_isotropic(hu, spacing, 1.0)
    extent_in = np.asarray(hu.shape) * spacing
    extent_out = np.asarray(out.shape) * out_spacing
    np.testing.assert_allclose(extent_out, extent_in, rtol=1e-6)
    assert all(abs(s - 1.0) <= 0.5 / n + 1e-9 for s, n in zip(out_spacing, out.shape, strict=True))
    # the sphere's centre stays where it was in mm (both grids measured from the volume edge)
    com_in = (np.asarray(ndimage.center_of_mass(hu > 0)) + 0.5) * spacing
    com_out = (np.asarray(ndimage.center_of_mass(out > -450)) + 0.5) * out_spacing
    np.testing.assert_allclose(com_out, com_in, atol=0.5)
    # and keeps its volume
    assert (out > -450).sum() * np.prod(out_spacing) == pytest.approx(
        (hu > 0).sum() * np.prod(spacing), rel=0.05)


def test_resample_isotropic_rejects_missing_spacing():
    with pytest.raises(ValueError, match="spacing"):
        resample_isotropic(np.zeros((4, 4, 4)))


def test_mask_bbox_is_the_box_of_the_mask_grown_and_clipped():
    from lunglib.preprocess import mask_bbox

    mask = np.zeros((6, 10, 12), np.uint8)
    mask[2, 3, 4] = mask[3, 7, 9] = 1
    assert mask_bbox(mask) == (slice(2, 4), slice(3, 8), slice(4, 10))
    np.testing.assert_array_equal(mask[mask_bbox(mask)].sum(), 2)
    # grown by the margin on both sides, per axis, and clipped to the array
    assert mask_bbox(mask, 1) == (slice(1, 5), slice(2, 9), slice(3, 11))
    assert mask_bbox(mask, (0, 5, 2)) == (slice(2, 4), slice(0, 10), slice(2, 12))
    # any number of axes; an empty mask has no box
    assert mask_bbox(np.array([[0, 0, 0], [0, 0, 5]])) == (slice(1, 2), slice(2, 3))
    assert mask_bbox(np.zeros((3, 4, 5), bool)) is None
    with pytest.raises(ValueError, match="margin"):
        mask_bbox(mask, -1)


def test_window_maps_the_range_to_unit_interval():
    hu = np.array([-2000, -1000, -300, 400, 3000])
    np.testing.assert_allclose(window(hu), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert window(hu).dtype == np.float32
    with pytest.raises(ValueError):
        window(hu, lo=10, hi=0)


def test_zero_center_uses_the_training_volumes_only():
    train = [np.full((2, 2, 2), 0.2), np.full((2, 2, 2), 0.4)]
    with pytest.raises(TypeError):
        fit_zero_center(train)  # the split must be named: train=...
    mean = fit_zero_center(train=iter(train))
    assert mean == pytest.approx(0.3)
    np.testing.assert_allclose(zero_center(np.full((2, 2), 0.5), mean), 0.2, atol=1e-6)
    with pytest.raises(ValueError, match="no training volumes"):
        fit_zero_center(train=[])


@pytest.mark.slow
def test_real_lidc_lung_mask_volume_and_both_lungs(lidc):
    _, hu, spacing, mask = lidc
    litres = lung_volume_ml(mask, spacing) / 1000.0
    assert 2.0 <= litres <= 8.0
    # both lungs: each side of the body's left-right middle holds more than a litre
    body_x = np.flatnonzero((hu > -300).any(axis=(0, 1)))
    x_mid = int(round((body_x[0] + body_x[-1]) / 2.0))
    right, left = mask[:, :, :x_mid], mask[:, :, x_mid:]
    assert lung_volume_ml(right, spacing) > 1000 and lung_volume_ml(left, spacing) > 1000


@pytest.mark.slow
def test_real_lidc_lung_mask_excludes_the_trachea(lidc):
    _, hu, spacing, mask = lidc
    # The trachea, found independently of segment_lungs: in the top slices of the scan
    # (+z is the head here), the round air pocket (< -900 HU) of 1.5-4 cm2 closest to the
    # left-right middle of the body.
    body_x = np.flatnonzero((hu > -300).any(axis=(0, 1)))
    x_mid = (body_x[0] + body_x[-1]) / 2.0
    found = 0
    for z in range(hu.shape[0] - 1, hu.shape[0] - 16, -1):
        labels, n = ndimage.label(hu[z] < -900)
        best = None
        for k in range(1, n + 1):
            region = labels == k
            area = region.sum() * spacing[1] * spacing[2]
            ys, xs = np.nonzero(region)
            touches = ys.min() == 0 or xs.min() == 0 or ys.max() == hu.shape[1] - 1 \
                or xs.max() == hu.shape[2] - 1
            if 150 <= area <= 400 and not touches and abs(xs.mean() - x_mid) < 20:
                best = region if best is None else best
        if best is not None:
            found += 1
            assert mask[z][best].mean() < 0.05, f"trachea in the lung mask at slice {z}"
    assert found >= 5, "the trachea should be visible in the top slices of LIDC-IDRI-0001"


@pytest.mark.slow
def test_real_lidc_lung_mask_leaves_the_liver_dome_out(lidc):
    # The top of the right liver dome pokes up into the lung base of LIDC-IDRI-0001 (about
    # z = -180 mm): there each axial slice shows it as a ~11 cm2 disc of soft tissue ringed by
    # lung. Inside a lung mask, a solid region that large can only be a nodule, and this scan's
    # one nodule covers at most ~3.7 cm2 of a slice -- so no slice may hold more than 6 cm2.
    _, hu, spacing, mask = lidc
    pixel_cm2 = spacing[1] * spacing[2] / 100.0
    largest = []
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        labels, n = ndimage.label((mask[z] > 0) & (hu[z] > -100))
        if n:
            largest.append((np.bincount(labels.ravel())[1:].max() * pixel_cm2, int(z)))
    area, z = max(largest)
    assert area < 6.0, f"{area:.1f} cm2 of soft tissue inside the lung mask at slice {z}"
    # The lowest slices of the mask (the posterior recesses) are still lung, partial volume
    # with the diaphragm included: mean below -350 HU.
    zs = np.flatnonzero(mask.any(axis=(1, 2)))[:4]
    assert all(hu[z][mask[z] > 0].mean() < -350 for z in zs)


@pytest.mark.slow
def test_prepare_real_lidc(lidc):
    scan = lidc[0]
    settings = Settings(size=64, n_slices=32)
    out = prepare(scan, settings)
    assert out.ok, out.qc
    assert out.image.shape == out.lung_mask.shape == (32, 64, 64)
    assert out.image.dtype == np.float32 and 0.0 <= out.image.min() and out.image.max() <= 1.0
    assert out.lung_mask.dtype == np.uint8
    assert 2000 <= out.lung_volume_ml <= 8000
    # the lung mask, resampled to the output grid, keeps its volume
    assert lung_volume_ml(out.lung_mask, out.spacing) == pytest.approx(out.lung_volume_ml,
                                                                       rel=0.1)
    # the square in-plane crop keeps mm per pixel the same in y and x
    assert out.spacing[1] == pytest.approx(out.spacing[2])
    # the LIDC nodule (x,y ~ (316, 367), z -125..-105 mm, see ../shared/data/README.md) is inside
    # the box
    z_index = scan.world_to_voxel((0.0, 0.0, -115.0))[0]
    nodule = scan.voxel_to_world((z_index, 367, 316))
    lo, hi = np.minimum(*out.bbox_mm), np.maximum(*out.bbox_mm)
    assert np.all(nodule >= lo) and np.all(nodule <= hi)
    # the box is the lungs' bounding box (plus a 5 mm margin): the mask spans it in z and x
    zs = np.flatnonzero(out.lung_mask.any(axis=(1, 2)))
    xs = np.flatnonzero(out.lung_mask.any(axis=(0, 1)))
    assert zs[-1] - zs[0] >= 32 - 3 and xs[-1] - xs[0] >= 64 - 5
    # lungs are dark: inside the mask the windowed image is well below the body's soft tissue
    assert out.image[out.lung_mask > 0].mean() < 0.25 < out.image[out.lung_mask == 0].mean()


@pytest.mark.parametrize("size, n_slices, source", [(64, 32, "working copy"),
                                                     (320, 100, "full resolution")])
def test_prepare_resamples_from_the_copy_its_output_grid_needs(lidc, size, n_slices, source):
    # The default 64 x 64 output (~4 mm pixels) is cut from the ~2.8 mm working copy; an output
    # finer than that copy (320 x 320: ~0.9 mm pixels) must come from the 0.7 mm scan itself.
    from lunglib.preprocess import OutputGrid, resample_box

    scan = lidc[0]
    out = prepare(scan, Settings(size=size, n_slices=n_slices))
    image = scan.to_sitk()
    work = shrink_to(image, 2.5)
    grid = OutputGrid(out.image.shape, out.bbox_mm[0], out.spacing, image.GetDirection())
    default = float(sitk.GetArrayViewFromImage(work).min())
    from_work = window(resample_box(work, grid, default=default))
    from_scan = window(resample_box(image, grid, default=default))
    expected, other = (from_work, from_scan) if source == "working copy" else (from_scan, from_work)
    np.testing.assert_allclose(out.image, expected, atol=1e-6)
    assert np.abs(out.image - other).max() > 0.05  # the two sources really differ


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def test_segment_lungs_matches_synthetic_ground_truth(synthetic_cohort):
    from lunglib.datasets import SyntheticDataset

    dataset = SyntheticDataset(synthetic_cohort)
    for pid in dataset.patient_ids():
        scan = dataset.load_scan(pid)
        truth = dataset.lung_mask(pid, scan)
        assert _dice(segment_lungs(scan.hu, scan.spacing, scan.direction), truth) > 0.95


def test_segment_lungs_leaves_the_synthetic_liver_dome_out():
    # Synthetic patients have a liver dome (55 HU) under the right diaphragm, rising 25-45 mm
    # into the lung base; make_patient gives each voxel's true tissue, so we can count the liver
    # that ends up in the mask. Filling per-slice holes over the dome put 4-12 mL of liver in
    # the masks of these three patients; the closing alone leaves under 1 mL at the dome's tip.
    from lunglib.synthetic import DEFAULT_MATRIX, TISSUES, cohort_specs, make_patient

    for spec in cohort_specs(3, seed=0, matrix=DEFAULT_MATRIX, difficulty=0.5):
        phantom = make_patient(spec)
        spacing = phantom.geometry.spacing
        mask = segment_lungs(phantom.hu, spacing) > 0
        liver_ml = lung_volume_ml(mask & (phantom.tissue == TISSUES["liver"]), spacing)
        assert liver_ml < 1.5, f"{spec.patient_id}: {liver_ml:.1f} mL of liver in the lung mask"
        assert _dice(mask, phantom.lung_mask) > 0.99


def test_prepare_keeps_every_nodule_of_the_synthetic_cohort(synthetic_cohort):
    from lunglib.datasets import SyntheticDataset

    dataset = SyntheticDataset(synthetic_cohort)
    for pid in dataset.patient_ids():
        scan = dataset.load_scan(pid)
        nodules = dataset.nodule_mask(pid, scan)
        out = prepare(scan, Settings(size=48, n_slices=24), nodule_mask=nodules)
        assert out.ok
        assert out.nodule_mask.shape == (24, 48, 48)
        assert set(np.unique(out.nodule_mask)) == set(np.unique(nodules).astype(int))
        # nodules sit in the lungs (after the closing that pulls juxtapleural ones in)
        inside = out.lung_mask[out.nodule_mask > 0].mean()
        assert inside > 0.5


def test_prepare_does_not_depend_on_slice_order(synthetic_cohort):
    from lunglib.datasets import SyntheticDataset

    dataset = SyntheticDataset(synthetic_cohort)
    scan = dataset.load_scan(dataset.patient_ids()[0])
    # The same anatomy stored feet-first: slices reversed, origin at the other end, z flipped.
    direction = scan.direction.copy()
    direction[:, 2] *= -1
    origin = scan.voxel_to_world((scan.shape[0] - 1, 0, 0))
    flipped = _scan(scan.hu[::-1].copy(), scan.spacing, direction, tuple(origin))
    a = prepare(scan, Settings(size=32, n_slices=16))
    b = prepare(flipped, Settings(size=32, n_slices=16))
    # the same box in patient space, up to one voxel of the ~2.5 mm segmentation grid
    np.testing.assert_allclose(np.sort(a.bbox_mm, axis=0), np.sort(b.bbox_mm, axis=0), atol=3.5)
    assert np.abs(a.image - b.image[::-1]).mean() < 0.02
    assert _dice(a.lung_mask, b.lung_mask[::-1]) > 0.97


def test_bin_shrink_in_slabs_matches_one_sitk_binshrink(monkeypatch):
    from lunglib.preprocess import resample as pp

    monkeypatch.setattr(pp, "_SLAB_BYTES", 4000)  # many slabs even for a small volume
    rng = np.random.default_rng(1)
    direction, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    geometry = pp._Geometry(np.array([0.7, 0.8, 2.5]), np.array([-120.0, 30.0, -300.0]), direction)
    for dtype in (np.int16, np.float32):
        volume = rng.integers(-1024, 2000, (23, 17, 30)).astype(dtype)
        for factors in ([4, 3, 1], [2, 2, 3], [1, 1, 1]):
            ref = sitk.BinShrink(geometry.image(volume), factors)
            np.testing.assert_array_equal(pp._bin_shrink(volume, factors),
                                          sitk.GetArrayFromImage(ref))
            shrunk = geometry.shrunk(factors)
            np.testing.assert_allclose(shrunk.origin, ref.GetOrigin(), atol=1e-9)
            np.testing.assert_allclose(shrunk.spacing, ref.GetSpacing())
    with pytest.raises(ValueError, match="fewer voxels than one block"):
        pp._bin_shrink(np.zeros((2, 8, 8), np.int16), [1, 1, 3])


def test_prepare_equals_the_whole_image_simpleitk_path(synthetic_cohort):
    # prepare() keeps the scan a NumPy array and cuts it before SimpleITK sees it; the public
    # step functions on a whole-scan SimpleITK image must give the very same volume.
    from lunglib.datasets import SyntheticDataset
    from lunglib.preprocess import box_grid, mask_bbox, resample_box

    dataset = SyntheticDataset(synthetic_cohort)
    for pid in dataset.patient_ids():
        scan = dataset.load_scan(pid)
        out = prepare(scan, Settings(size=40, n_slices=20))
        work = shrink_to(scan.to_sitk(), 2.5)  # the working copy, then the segmentation copy
        small = shrink_to(work, 5.0)
        lungs = segment_lungs(sitk.GetArrayFromImage(small), small.GetSpacing()[::-1],
                              scan.direction)
        grid = box_grid(small, mask_bbox(lungs), (20, 40, 40), margin_mm=5.0, square=True)
        np.testing.assert_allclose(grid.origin, out.bbox_mm[0], atol=1e-6)
        default = float(sitk.GetArrayViewFromImage(work).min())
        expected = window(resample_box(work, grid, default=default))
        np.testing.assert_allclose(out.image, expected, atol=1e-6)


def test_prepare_without_lungs_is_a_qc_finding_not_a_crash():
    hu = np.full((20, 64, 64), -1000, np.int16)
    yy, xx = np.mgrid[:64, :64]
    hu[:, (yy - 32) ** 2 + (xx - 32) ** 2 < 25**2] = 20  # a water phantom: no lungs
    out = prepare(_scan(hu), Settings(size=16, n_slices=8))
    assert not out.ok
    assert [f.code for f in out.qc] == ["no_lungs_found"]
    assert out.image.shape == (8, 16, 16) and out.lung_mask.sum() == 0


def test_prepare_validates_its_inputs():
    with pytest.raises(TypeError, match="CTScan"):
        prepare(np.zeros((4, 4, 4)))
    scan = _scan(np.zeros((4, 8, 8), np.int16))
    with pytest.raises(ValueError, match="voxel grid"):
        prepare(scan, nodule_mask=np.zeros((4, 8, 7)))
    with pytest.raises(ValueError, match="window"):
        PrepareOptions(window=(400, -1000))
