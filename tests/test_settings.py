"""lunglib.Settings: defaults, the three sources of values, and a clear error for each bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from lunglib.settings import Settings, default_data_root, read_labels


def _labels_csv(folder: Path, text: str, name: str = "labels.csv") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_defaults_are_the_course_settings(monkeypatch):
    monkeypatch.delenv("LUNGLIB_HOME", raising=False)
    s = Settings()
    assert (s.size, s.n_slices, s.visualize, s.seed) == (64, 32, True, 42)
    assert s.data_dir is None and s.labels is None
    assert s.resolved_data_dir == default_data_root() / "synthetic"
    assert s.cache_dir == default_data_root() / "cache"


def test_values_from_environment_mapping(tmp_path: Path):
    labels = _labels_csv(tmp_path, "id,cancer\np1,1\np2,0\n")
    env = {
        "LUNGLIB_SIZE": "96",
        "LUNGLIB_N_SLICES": "20",
        "LUNGLIB_DATA_DIR": str(tmp_path),
        "LUNGLIB_LABELS": str(labels),
        "LUNGLIB_VISUALIZE": "false",
        "LUNGLIB_SEED": "7",
        "LUNGLIB_CACHE_DIR": str(tmp_path / "cache"),
        "UNRELATED": "x",
    }
    s = Settings.from_env(env)
    assert (s.size, s.n_slices, s.visualize, s.seed) == (96, 20, False, 7)
    assert s.data_dir == tmp_path and s.labels == labels
    assert s.cache_dir == tmp_path / "cache"
    assert s.label_map() == {"p1": "1", "p2": "0"}
    # Keyword overrides win over the environment.
    assert Settings.from_env(env, size=32).size == 32


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ValueError, match=r"size must be a whole number.*LUNGLIB_SIZE='big'"):
        Settings.from_env({"LUNGLIB_SIZE": "big"})


def test_from_params_ignores_notebook_only_keys(tmp_path: Path):
    params = {
        "dataset": "synthetic",
        "output_dir": "../outputs/notebooks",
        "data_dir": "",
        "labels": "",
        "size": 48,
        "n_slices": 16,
        "seed": 3,
        "visualize": False,
        "epochs": 2,
    }
    s = Settings.from_params(params, use_env=False)
    assert (s.size, s.n_slices, s.seed, s.visualize) == (48, 16, 3, False)
    assert s.data_dir is None and s.labels is None
    assert Settings.from_params({"data_dir": str(tmp_path)}, use_env=False).data_dir == tmp_path


def test_from_params_layers_over_environment(monkeypatch):
    monkeypatch.setenv("LUNGLIB_N_SLICES", "24")
    s = Settings.from_params({"size": 80})
    assert (s.size, s.n_slices) == (80, 24)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "size must be a positive number of pixels, got 0"),
        ({"size": -3}, "size must be a positive"),
        ({"size": 64.5}, "size must be a whole number"),
        ({"n_slices": -1}, "n_slices must be a positive number of slices, got -1"),
        ({"n_slices": "many"}, "n_slices must be a whole number"),
        ({"seed": -1}, "seed must be zero or positive"),
        ({"visualize": "perhaps"}, "visualize must be true or false"),
    ],
)
def test_invalid_numbers_and_flags(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


def test_missing_data_dir_is_refused(tmp_path: Path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(ValueError, match="data_dir .*no_such_folder does not exist"):
        Settings(data_dir=missing)
    a_file = _labels_csv(tmp_path, "id,cancer\na,1\n")
    with pytest.raises(ValueError, match="not a folder"):
        Settings(data_dir=a_file)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("patient,diagnosis\np1,1\n", "needs an id column .* and a label column"),
        ("id,age\np1,70\n", "needs an id column"),
        ("cancer\n1\n", "needs an id column"),
        ("id,cancer\np1,1\np2,0\np1,1\n", "line 4: id 'p1' appears twice"),
        ("id,cancer\n,1\n", "line 2: empty id"),
        ("id,cancer\n", "no rows"),
    ],
)
def test_bad_labels_file_is_refused_up_front(tmp_path: Path, text: str, message: str):
    path = _labels_csv(tmp_path, text)
    with pytest.raises(ValueError, match=message) as info:
        Settings(labels=path)
    assert str(path) in str(info.value)


def test_missing_labels_file(tmp_path: Path):
    with pytest.raises(ValueError, match="labels file .*nope.csv does not exist"):
        Settings(labels=tmp_path / "nope.csv")


def test_labels_column_aliases_and_excel_bom(tmp_path: Path):
    path = tmp_path / "luna.csv"
    path.write_bytes("\ufeffseriesuid,class\n1.2.3,1\n1.2.4,0\n".encode())
    assert read_labels(path) == {"1.2.3": "1", "1.2.4": "0"}


def test_labels_as_mapping(tmp_path: Path):
    s = Settings(labels={"p1": 1, "p2": 0})
    assert s.label_map() == {"p1": "1", "p2": "0"}
    # Without labels, <data_dir>/labels.csv is used when it exists.
    _labels_csv(tmp_path, "id,cancer\nq1,0\n")
    assert Settings(data_dir=tmp_path).label_map() == {"q1": "0"}
    (tmp_path / "unlabelled").mkdir()
    assert Settings(data_dir=tmp_path / "unlabelled").label_map() == {}


def test_replace_validates_again():
    s = Settings()
    assert s.replace(size=32).size == 32
    with pytest.raises(ValueError, match="size"):
        s.replace(size=0)


def test_dataset_and_cache_reprs_carry_no_absolute_path(tmp_path, monkeypatch):
    """Notebook outputs print these objects; they must not name the machine's folders."""
    from lunglib.datasets.base import CTDataset
    from lunglib.preprocess.cache import CacheIndex

    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    class ThreePatients(CTDataset):
        def patient_ids(self):
            return ["a", "b", "c"]

        def load_scan(self, patient_id):
            raise NotImplementedError

        def __len__(self):
            return 3

    dataset = object.__new__(ThreePatients)
    dataset.root = tmp_path / "data" / "synthetic"
    assert repr(dataset) == "ThreePatients(root='../data/synthetic', patients=3)"
    index = object.__new__(CacheIndex)
    index.folder, index.qc_rows = tmp_path / "data" / "cache" / "abc", []
    monkeypatch.setattr(CacheIndex, "__len__", lambda self: 2)
    assert repr(index) == "CacheIndex('../data/cache/abc', ok=2, skipped=0)"
    assert str(tmp_path) not in repr(dataset) + repr(index)
