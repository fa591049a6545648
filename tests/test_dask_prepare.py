"""Preparing on Dask: a LocalCluster of 2 worker processes gives the cache the in-process path
gives, byte for byte -- also when a worker is killed mid-run, and when two clients prepare into
one folder at once.

One cluster serves the whole module (started as :func:`cache_dataset` starts its own), and the
cohort is tiny, so the module stays well under a minute on two cores.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lunglib.datasets import SyntheticDataset
from lunglib.preprocess import cache
from lunglib.preprocess.cache import CacheIndex, cache_dataset, npz_bytes
from lunglib.preprocess.dask_prepare import dask_client
from lunglib.settings import Settings

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

SMALL = {"size": 32, "n_slices": 16}
VICTIM = "synth-0002"


def _in_worker() -> bool:
    return multiprocessing.current_process().name != "MainProcess"


class KillsItsWorker(SyntheticDataset):
    """The first ``kills`` attempts at :data:`VICTIM` kill their worker process (SIGKILL, as the
    kernel's out-of-memory killer would: no exception, no cleanup); ``marker_dir`` counts them."""

    kills: int
    marker_dir: Path

    def load_scan(self, patient_id):
        if patient_id == VICTIM and _in_worker():
            done = len(list(self.marker_dir.glob("kill-*")))
            if done < self.kills:
                (self.marker_dir / f"kill-{done}").touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return super().load_scan(patient_id)


class KillsItsWorkerAlways(SyntheticDataset):
    """The synthetic cohort plus one patient whose preparation kills its worker every time."""

    def patient_ids(self):
        return sorted([*super().patient_ids(), "synth-0002-oom"])

    def load_scan(self, patient_id):
        if patient_id == "synth-0002-oom":
            if _in_worker():
                os.kill(os.getpid(), signal.SIGKILL)
            raise MemoryError("would have been killed")
        return super().load_scan(patient_id)


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 single-threaded worker processes, as cache_dataset starts one."""
    with dask_client(None, workers=2) as dask:
        yield dask


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from lunglib.synthetic import write_cohort

    return write_cohort(tmp_path_factory.mktemp("synth"), n_patients=4, seed=5, matrix=64,
                        workers=1, progress=False)


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory) -> CacheIndex:
    """The cache as the single-process path writes it."""
    settings = Settings(cache_dir=tmp_path_factory.mktemp("reference"), **SMALL)
    return cache_dataset(SyntheticDataset(cohort), settings, workers=1, progress=False)


def _files(folder: Path, settings_too: bool = True) -> dict[str, bytes]:
    """Every file of a cache folder by name (the lock file aside, an empty file by design)."""
    skip = {"qc.csv.lock"} | (set() if settings_too else {"settings.json"})
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in skip}


def _prepared_on(client, run) -> tuple[object, list[str]]:
    """``run()``'s result, and the keys of the prepare tasks the cluster ran meanwhile."""
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        result = run()
    return result, [t["key"] for t in stream.data if str(t["key"]).startswith("lunglib-prepare")]


def test_the_cluster_writes_the_cache_the_single_process_path_writes(client, cohort, reference,
                                                                     tmp_path):
    settings = Settings(cache_dir=tmp_path, **SMALL)
    index, keys = _prepared_on(client, lambda: cache_dataset(
        SyntheticDataset(cohort), settings, scheduler=client, progress=False))
    assert len(set(keys)) == len(reference.ids) == 4  # one task per patient, on the workers
    assert not any(VICTIM in str(key) for key in keys)  # task keys name no patient
    assert index.folder.name == reference.folder.name
    assert index.ids == reference.ids and not index.skipped
    assert _files(index.folder) == _files(reference.folder)  # every npz, qc.csv, settings.json
    # the workers never loaded TensorFlow (they unpickle datasets and prepare, nothing else)
    assert not any(client.run(lambda: "tensorflow" in sys.modules).values())


@pytest.mark.parametrize("kills", [1, 2])
def test_a_worker_killed_mid_run_still_ends_with_the_complete_identical_cache(
        client, cohort, reference, tmp_path, kills):
    # once: Dask runs the task again. Twice (say, out of memory while the other worker held a
    # big scan too): past the cluster's allowed failures, and the patient is run again alone.
    dataset = KillsItsWorker(cohort)
    dataset.kills, dataset.marker_dir = kills, tmp_path
    index = cache_dataset(dataset, Settings(cache_dir=tmp_path / "cache", **SMALL),
                          scheduler=client, progress=False)
    assert len(list(tmp_path.glob("kill-*"))) == kills, "the victim's worker was not killed"
    assert index.ids == reference.ids and not index.skipped
    assert _files(index.folder, settings_too=False) == _files(reference.folder,
                                                              settings_too=False)
    assert not list(index.folder.glob("*.tmp*"))


def test_a_patient_that_always_kills_its_worker_costs_only_itself(client, cohort, reference,
                                                                   tmp_path):
    index = cache_dataset(KillsItsWorkerAlways(cohort), Settings(cache_dir=tmp_path, **SMALL),
                          scheduler=client, progress=False)
    qc = {row["id"]: row for row in index.qc_rows}
    assert index.ids == reference.ids
    assert qc["synth-0002-oom"]["status"] == "skipped"
    assert "worker process preparing this patient died" in qc["synth-0002-oom"]["reason"]
    for pid in reference.ids:  # the innocent were prepared as a clean run prepares them
        assert index.path(pid).read_bytes() == reference.path(pid).read_bytes()


def _slow_qc_reads(monkeypatch, seconds: float) -> None:
    """Widen the window between reading qc.csv and writing it back, where a lost update hides."""
    read = cache._read_qc_rows

    def slow(path):
        rows = read(path)
        time.sleep(seconds)
        return rows

    monkeypatch.setattr(cache, "_read_qc_rows", slow)


def test_two_clients_preparing_into_one_folder_at_once_leave_it_whole(
        client, cohort, reference, tmp_path, monkeypatch):
    # one client on the cluster, two in this process -- one pid, like two hosts whose process
    # ids collide -- all at once into the same folder
    _slow_qc_reads(monkeypatch, 0.01)
    dataset = SyntheticDataset(cohort)
    settings = Settings(cache_dir=tmp_path, **SMALL)
    runs = [{"scheduler": client}, {"workers": 1}, {"workers": 1}]
    with ThreadPoolExecutor(len(runs)) as pool:
        indexes = list(pool.map(
            lambda kwargs: cache_dataset(dataset, settings, progress=False, **kwargs), runs))
    for index in indexes:
        assert index.ids == reference.ids and not index.skipped
    assert _files(indexes[0].folder) == _files(reference.folder)
    assert not list(indexes[0].folder.glob("*.tmp*"))


def test_the_qc_lock_keeps_every_clients_rows(tmp_path, monkeypatch):
    # clients preparing different patients into one folder each merge their rows into qc.csv;
    # none may write over another's between its read and its write
    _slow_qc_reads(monkeypatch, 0.005)

    def one_client(k: int) -> None:
        mine: dict[str, dict[str, object]] = {}
        for i in range(4):
            mine[f"p{k}-{i}"] = {"id": f"p{k}-{i}", "status": "ok", "reason": ""}
            cache._merge_qc(tmp_path, mine.values())

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one_client, range(6)))
    ids = [row["id"] for row in cache._read_qc_rows(tmp_path / "qc.csv")]
    assert ids == sorted(f"p{k}-{i}" for k in range(6) for i in range(4))


def test_a_volume_is_stored_as_the_same_bytes_whenever_it_is_written(monkeypatch):
    import time as time_module

    arrays = {"image": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "label": np.int64(1)}
    first = npz_bytes(arrays)
    monkeypatch.setattr(time_module, "time", lambda: 1.9e9)  # years later
    assert npz_bytes(arrays) == first
    import io

    with np.load(io.BytesIO(first)) as data:
        np.testing.assert_array_equal(data["image"], arrays["image"])
        assert int(data["label"]) == 1


def test_the_prepare_command_on_a_cluster_prints_counts_only(client, cohort, reference,
                                                             tmp_path, capsys):
    import dask

    from lunglib.cli import main

    command = ["prepare", "--dataset", "synthetic", "--data-dir", str(cohort), "--size", "32",
               "--n-slices", "16", "--cache-dir", str(tmp_path), "--quiet"]
    address = client.scheduler.address
    with dask.config.set({"scheduler-address": address}):  # as $DASK_SCHEDULER_ADDRESS does
        code, keys = _prepared_on(client, lambda: main(command))
    out = capsys.readouterr().out
    assert code == 0 and len(set(keys)) == 4, out
    assert "4 of 4 scan(s) prepared, 0 skipped" in out
    assert "synth-" not in out  # counts, never patient ids
    folder = tmp_path / reference.folder.name
    assert _files(folder) == _files(reference.folder)

    # --cleanup removes a leftover temporary whatever its age; nothing is prepared again
    (folder / "synth-0001.npz.otherhost.0123456789abcdef.tmp").write_bytes(b"half")
    assert main([*command, "--scheduler", address, "--cleanup"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 leftover temporary file(s)" in out
    assert _files(folder) == _files(reference.folder)
