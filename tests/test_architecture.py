"""The package's layering: data flows one way, and importing lunglib stays cheap.

The order is defined here, once, at subpackage level (the package docstring describes it):
foundation -> I/O -> datasets and the synthetic cohort -> preprocessing -> augmentation ->
models -> training -> inference -> evaluation -> recipes -> visualisation -> the application
(course, pipeline, predict, report, CLI). A module may import its own layer and the layers below it,
never one above; modules inside one subpackage share its layer. A new subpackage or top-level module
must be placed in ``LAYERS`` before this test passes.

Recipes sit above evaluation because a recipe is a whole experiment: it trains, predicts, chooses
thresholds on validation patients and scores the test patients.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lunglib"

LAYERS: dict[int, set[str]] = {
    0: {"_version", "settings"},
    1: {"io"},
    2: {"datasets", "synthetic"},
    3: {"preprocess"},
    4: {"augment"},
    5: {"models"},
    6: {"training"},
    7: {"inference"},
    8: {"evaluation"},
    9: {"recipes"},
    10: {"viz"},
    11: {"", "course", "pipeline", "predict", "characterize", "batch", "report", "cli", "__main__"},
}
LAYER_OF = {name: rank for rank, names in LAYERS.items() for name in names}


def layer(module: str) -> int | None:
    """The layer of a module named relative to the package (``io.dicom`` -> the layer of ``io``)."""
    return LAYER_OF.get(module.split(".")[0] if module else "")


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
            if target:  # `from lunglib.io.dicom import load_scan`: the module is the target
                found.add(target)
                continue
            for alias in node.names:  # `from lunglib import io` names a subpackage
                found.add(alias.name if layer(alias.name) is not None else "")
    return found


def test_every_module_has_a_layer():
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    unplaced = sorted(m for m in modules if layer(m) is None)
    assert not unplaced, f"place these modules in LAYERS of {Path(__file__).name}: {unplaced}"


def upward_imports() -> list[str]:
    """Every import of a module from a higher layer, as readable lines."""
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for dep in imported_modules(path):
            if (layer(dep) or 0) > layer(name):
                upward.append(f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})")
    return upward


def test_lower_layers_never_import_upper_ones():
    upward = upward_imports()
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_the_import_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "lunglib"
    (fake / "io").mkdir(parents=True)
    (fake / "datasets").mkdir()
    (fake / "io" / "dicom.py").write_text(
        "from lunglib.training.train import train_model\nfrom . import qc\n")
    (fake / "io" / "qc.py").write_text("")
    (fake / "datasets" / "lidc.py").write_text("from ..models.cnn import build_cnn\nimport numpy\n")
    (fake / "settings.py").write_text("from lunglib import load_scan\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert imported_modules(fake / "io" / "dicom.py") == {"training.train", "io"}
    assert imported_modules(fake / "datasets" / "lidc.py") == {"models.cnn"}
    assert imported_modules(fake / "settings.py") == {""}  # the top-level API is the top layer
    assert upward_imports() == [
        "datasets.lidc (layer 2) imports models.cnn (layer 5)",
        "io.dicom (layer 1) imports training.train (layer 6)",
        "settings (layer 0) imports  (layer 11)",
    ]


def test_importing_lunglib_does_not_load_tensorflow():
    heavy = ["tensorflow", "keras", "keras_tuner"]
    code = ("import sys, lunglib, lunglib.io, lunglib.datasets, lunglib.synthetic, "
            "lunglib.preprocess, lunglib.augment, lunglib.models, lunglib.training, "
            "lunglib.inference, lunglib.evaluation, lunglib.viz, lunglib.settings; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_the_package_docstring_lists_the_layers_in_this_order():
    """The layer table in ``lunglib/__init__.py`` documents ``LAYERS``; keep the two equal."""
    import re

    import lunglib

    named = re.findall(r":mod:`lunglib\.(\w+)`", lunglib.__doc__)
    documented = [layer(name) for name in named]
    assert None not in documented, f"the docstring names a module with no layer: {named}"
    assert documented == sorted(documented), f"docstring order differs from LAYERS: {named}"
    assert set(documented) == set(LAYERS), "every layer appears in the docstring"
