"""Execute the course on real CT for docs/real_data/: 01-02 on a LIDC scan, 04, 05, 07 on patches.

A student without a download still sees what the notebooks do on real patients: this script runs
them, with their default settings, on the real data in ``../shared/data`` beside the project
(see its README for provenance and licences) and commits nothing of the data -- only the executed
notebooks, whose figures are small renderings of it:

* ``01_explore`` and ``02_preprocess`` on the LIDC-IDRI case (``dataset = "lidc"``): one scan,
  its four readers' outlines, the lung mask, resampling and the cache. With one patient there is
  no split to save, which 02 says.
* ``04_train_cnn``, ``05_tune`` and ``07_evaluate`` on the real LIDC nodule patches
  (``dataset = "patches"``): 2D malignancy classification, split by patient.

Each part runs in its own run folder under ``outputs/real_data/`` (git-ignored) through
:func:`lunglib.pipeline.run_course`, as ``lunglib run`` does; the executed notebooks are then
copied into ``docs/real_data/`` with the absolute folders of this machine replaced by the
relative ones a reader of the repository would use; ``docs/real_data/runs.json`` records each
part's run times, machine-speed reference and load, and ``docs/real_data/README.md`` lists them.

Run: .venv/bin/python docs/make_real_data_track.py [--shared ../shared/data] [--parts lidc_scan]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from lunglib.pipeline import course_notebooks, run_course
from lunglib.report.runinfo import REFERENCE_TEXT

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "real_data"
RUNS = ROOT / "outputs" / "real_data"

#: (run folder, notebooks, dataset, data path below the shared folder, what it is)
PARTS = [
    ("lidc_scan", ("01", "02"), "lidc", "lidc_idri",
     "one LIDC-IDRI scan (LIDC-IDRI-0001: 133 slices of 2.5 mm) with its four readers' outlines"),
    ("lidc_patches", ("04", "05", "07"), "patches", "lidc_nodule_patches/dev.npz",
     "the development split of the real LIDC nodule patches (1762 patches of 563 patients)"),
]

CITATION = """\
LIDC-IDRI is licensed CC BY 3.0 by The Cancer Imaging Archive. Cite:

- Armato SG III, McLennan G, Bidaut L, McNitt-Gray MF, Meyer CR, Reeves AP, et al. (2015). Data
  From LIDC-IDRI. The Cancer Imaging Archive. https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX
- Armato SG III, McLennan G, Bidaut L, et al. The Lung Image Database Consortium (LIDC) and Image
  Database Resource Initiative (IDRI): a completed reference database of lung nodules on CT
  scans. Medical Physics 38(2):915-931, 2011.
- Clark K, Vendt B, Smith K, et al. The Cancer Imaging Archive (TCIA): Maintaining and Operating
  a Public Information Repository. Journal of Digital Imaging 26(6):1045-1057, 2013.

`LIDC-IDRI-0001` is the collection's own public, de-identified subject name; it is shown as the
collection publishes it. The TCIA data usage policy applies: do not attempt to identify or contact
the patients."""


def relative_text(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each absolute folder replaced by its relative spelling, longest first."""
    for absolute in sorted(replacements, key=len, reverse=True):
        text = text.replace(absolute, replacements[absolute])
    return text


def run_part(name: str, numbers: tuple[str, ...], dataset: str, data: Path,
             shared: Path) -> tuple[dict, float]:
    """Run one part of the track; return its seconds per notebook and the speed reference."""
    notebooks = [p for p in course_notebooks() if p.name[:2] in numbers]
    folder = RUNS / name
    shutil.rmtree(folder, ignore_errors=True)
    result = run_course(folder, {"dataset": dataset, "data_dir": str(data)},
                        notebooks=notebooks, report=False)
    DOCS.mkdir(parents=True, exist_ok=True)
    replacements = {str(folder): f"../outputs/real_data/{name}",
                    str(shared): "../../shared/data",
                    str(ROOT): ".."}
    for executed in result.notebooks:
        text = relative_text(executed.read_text(encoding="utf-8"), replacements)
        json.loads(text)  # still a notebook
        (DOCS / f"{executed.stem}_{name}.ipynb").write_text(text, encoding="utf-8")
    return result.seconds, result.reference_seconds


def write_index(runs: dict[str, dict]) -> None:
    """``docs/real_data/README.md`` from the recorded runs of every part (``runs.json``)."""
    lines = [
        "# The course on real CT",
        "",
        "Executed copies of the course notebooks on real, public LIDC-IDRI data, written by",
        "`.venv/bin/python docs/make_real_data_track.py` (the data is not in the repository; the",
        "script reads it from `../shared/data` beside the project). Open them on GitHub or in",
        "JupyterLab to see real CT without downloading anything; to run them yourself, fetch the",
        "data as each notebook's header says (`python -m lunglib fetch` for LIDC-IDRI scans).",
        "",
        "| notebook | data | parameters | run time (s) | machine-speed reference (s) | load |",
        "|---|---|---|---|---|---|",
    ]
    for name, _, dataset, _, description in PARTS:
        run = runs.get(name)
        for notebook, took in (run or {}).get("seconds", {}).items():
            page = f"{Path(notebook).stem}_{name}.ipynb"
            lines.append(f"| [{page}]({page}) | {description} | `dataset = \"{dataset}\"` | "
                         f"{took:.0f} | {run['reference_seconds']:.3f} | {run['load']:.1f} |")
    lines += [
        "",
        f"The machine-speed reference is {REFERENCE_TEXT}; the load is the one-minute load",
        "average when the part began (the reference machine has 2 cores). Compare both with the",
        "figures in [docs/results.md](../results.md) before comparing run times.",
        "",
        "Everything else is each notebook's default: the same code and settings as on the",
        "synthetic cohort. On one scan, 01 and 02 show loading, the readers' outlines, the lung",
        "mask and the cache; there is no split to save. 04, 05 and 07 train, tune and evaluate",
        "the 2D classifier on the patches, split by patient; a patch is malignant when its",
        "outlining reader rated it 4-5 and benign at 1-2 (rating 3 left out; see the patches'",
        "README).",
        "",
        "## Data and citation",
        "",
        CITATION,
        "",
    ]
    (DOCS / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the shared real-data folder (default: ../shared/data)")
    parser.add_argument("--parts", nargs="+", choices=[part[0] for part in PARTS],
                        default=[part[0] for part in PARTS], help="which parts to run")
    args = parser.parse_args()
    shared = args.shared.resolve()
    record = DOCS / "runs.json"
    runs = json.loads(record.read_text()) if record.is_file() else {}
    for name, numbers, dataset, relative, _ in PARTS:
        if name not in args.parts:
            continue
        data = shared / relative
        if not data.exists():
            raise SystemExit(f"{data} is missing: this script needs the shared real data")
        load = os.getloadavg()[0]
        seconds, reference = run_part(name, numbers, dataset, data, shared)
        runs[name] = {"seconds": seconds, "reference_seconds": reference, "load": load}
        record.write_text(json.dumps(runs, indent=1) + "\n")
        for notebook, took in seconds.items():
            print(f"{notebook} on {name}: {took:.0f} s")
    write_index(runs)
    print(f"written {DOCS.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
