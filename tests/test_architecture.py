"""The package's layering: data flows one way, and importing lunglib stays cheap.

I/O -> preprocessing -> augmentation -> models -> training and tuning -> metrics ->
visualisation -> pipeline and CLI. A module may import its own layer and the layers below it,
never one above. A new module must be placed in ``LAYERS`` before this test passes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lunglib"

LAYERS: dict[int, set[str]] = {
    0: {"qc", "settings", "atomic"},
    1: {"", "dicom", "synthetic", "export", "datasets", "datasets.base", "datasets.dsb2017",
        "datasets.lidc", "datasets.luna16", "datasets.lung_pet_ct_dx", "datasets.patches",
        "datasets.synthetic", "datasets.extract", "datasets.download"},
    2: {"preprocess", "cache"},
    3: {"augment", "inputs"},
    4: {"cnn", "unet", "features"},
    5: {"splits", "train", "tune", "segment", "bundle"},
    6: {"metrics", "seg_metrics"},
    7: {"viz", "explain"},
    8: {"pipeline", "predict", "course", "cli", "__main__"},
}
RANK = {name: rank for rank, names in LAYERS.items() for name in names}


def module_name(path: Path) -> str:
    """``lunglib/datasets/lidc.py`` -> ``datasets.lidc``; a package's ``__init__`` names it."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """The lunglib modules ``path`` imports, as names relative to the package."""
    own = module_name(path).split(".") if module_name(path) else []
    package = own if path.name == "__init__.py" else own[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "lunglib"]
            found.update(".".join(n.split(".")[1:]) for n in names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").split(".")[0] == "lunglib":
                target = ".".join(node.module.split(".")[1:])
            else:
                continue
            for alias in node.names:  # `from lunglib import dicom` names a module
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in RANK else target)
    return found


def test_every_module_has_a_layer():
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    unplaced = sorted(modules - RANK.keys())
    assert not unplaced, f"place these modules in LAYERS of {Path(__file__).name}: {unplaced}"


def test_lower_layers_never_import_upper_ones():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for dep in imported_modules(path):
            if RANK.get(dep, -1) > RANK[name]:
                upward.append(f"{name} (layer {RANK[name]}) imports {dep} (layer {RANK[dep]})")
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_the_import_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "lunglib"
    (fake / "datasets").mkdir(parents=True)
    (fake / "dicom.py").write_text("from lunglib.train import train_model\nfrom . import qc\n")
    (fake / "datasets" / "lidc.py").write_text("from ..cnn import build_cnn\nimport numpy\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert imported_modules(fake / "dicom.py") == {"train", "qc"}
    assert imported_modules(fake / "datasets" / "lidc.py") == {"cnn"}


def test_importing_lunglib_does_not_load_tensorflow():
    heavy = ["tensorflow", "keras", "keras_tuner"]
    code = ("import sys, lunglib, lunglib.dicom, lunglib.preprocess, lunglib.metrics; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
