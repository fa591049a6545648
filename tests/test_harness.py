"""The suite's own switches: in CI, missing real data is a failure, not a quiet skip."""

from __future__ import annotations

import conftest
import pytest


def test_missing_shared_data_skips_by_default_and_fails_when_required(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "nowhere")
    monkeypatch.delenv(conftest.REQUIRE_SHARED_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="real-data test skipped"):
        conftest._shared("lidc_idri")
    monkeypatch.setenv(conftest.REQUIRE_SHARED_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="requires it"):
        conftest._shared("lidc_idri")
    (tmp_path / "nowhere" / "lidc_idri").mkdir(parents=True)
    assert conftest._shared("lidc_idri") == tmp_path / "nowhere" / "lidc_idri"
