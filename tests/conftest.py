"""Shared test fixtures: where the real CT data lives, and a skip when it does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


#: Set (to 1) where ../shared/data must be present, as in CI: its tests then fail instead of
#: skipping when it is missing, so a moved or lost data folder cannot pass as a green run.
REQUIRE_SHARED_ENV = "LUNGLIB_REQUIRE_SHARED_DATA"


def _shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"../shared/data not present ({path} missing): real-data test skipped"
        if os.environ.get(REQUIRE_SHARED_ENV) == "1":
            pytest.fail(f"{message} -- but {REQUIRE_SHARED_ENV}=1 requires it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CT data folder beside the project (skips the test where it is absent)."""
    return _shared()


@pytest.fixture(scope="session")
def lidc_case_dir() -> Path:
    """The complete LIDC-IDRI-0001 case: DICOM series plus the readers' XML."""
    return _shared("lidc_idri", "LIDC-IDRI-0001")


@pytest.fixture(scope="session")
def pet_ct_dx_dir() -> Path:
    """The Lung-PET-CT-Dx collection folder (one patient, two series, VOC boxes)."""
    return _shared("lung_pet_ct_dx")


@pytest.fixture(scope="session")
def lidc_patches_npz() -> Path:
    """The development split of real LIDC nodule patches with masks and ratings."""
    return _shared("lidc_nodule_patches", "dev.npz")


from _browser import chromium  # noqa: E402,F401  -- the shared browser fixture (tests/_browser.py)
