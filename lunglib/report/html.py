"""The report page: one self-contained HTML file for a run folder.

Everything the page needs is inside it: the CSS inline, every figure a base64 ``data:`` URI, no
script and no font from the network, so it opens from disk, by e-mail or offline. Each value taken
from ``metrics.json`` is written by :func:`~lunglib.report.formatting.format_metric` into an
element with ``data-metric="<dotted key>"``, which lets a test find every metric on the page and
compare it with the file; any value the sections below do not place is listed under "Other values",
so none is lost. A part of the run folder that is missing shows a one-line "not available" reason.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss

from lunglib._version import __version__
from lunglib.datasets.provenance import dataset_provenance
from lunglib.report import figures
from lunglib.report.formatting import (
    DEGENERATE_NOTE,
    degenerate_metrics,
    flatten,
    format_metric,
    format_number,
    format_setting,
)
from lunglib.report.privacy import public_text
from lunglib.report.runfolder import RunFolder
from lunglib.report.runinfo import REFERENCE_TEXT, now_iso

CLASSIFICATION_METRICS: dict[str, str] = {
    "accuracy": "accuracy",
    "precision": "precision (positive predictive value)",
    "recall": "recall (sensitivity)",
    "specificity": "specificity",
    "f1": "F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "log_loss": "log-loss",
    "brier": "Brier score",
}
"""The classification table's rows, in order, with their names for people."""

THRESHOLD_RULES: dict[str, str] = {
    "youden": "maximises sensitivity + specificity - 1 (Youden's J)",
    "f1": "maximises F1",
    "sensitivity": "the highest threshold whose sensitivity reaches the target",
    "accuracy": "maximises accuracy",
}

SEGMENTATION_COLUMNS: dict[str, str] = {
    "n": "n", "dice": "Dice", "iou": "IoU", "hd95_mm": "HD95 (mm)", "nsd": "NSD",
}
"""Known per-level segmentation values and their column titles (others follow as they are)."""

CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --band: #f5f7fa; --accent: #1f5fa8;
        --warn-bg: #fff4e0; --warn: #8a5300; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: var(--ink); background: #fff; }
header { background: #13294b; color: #fff; padding: 22px 32px 16px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
header p { margin: 0; color: #c9d6ea; }
nav { margin-top: 12px; font-size: 14px; }
nav a { color: #fff; margin-right: 16px; text-decoration: none; border-bottom: 1px solid #6d88b3; }
main { max-width: 1120px; margin: 0 auto; padding: 8px 32px 40px; }
section { border-bottom: 1px solid var(--line); padding: 8px 0 20px; }
h2 { font-size: 21px; margin: 22px 0 8px; color: #13294b; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p { margin: 6px 0; }
.muted { color: var(--muted); font-size: 13px; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 18px; margin: 8px 0; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 12px 4px 6px; text-align: left;
         vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { background: #e8f3e8; font-weight: 600; }
.na { color: var(--muted); font-style: italic; }
.flag { display: inline-block; background: var(--warn-bg); color: var(--warn); border-radius: 4px;
        padding: 0 6px; font-size: 12px; margin-left: 6px; }
.ci-degenerate { color: var(--muted); text-decoration: line-through; }
.figures { display: flex; flex-wrap: wrap; gap: 18px; }
.columns { display: flex; flex-wrap: wrap; gap: 8px 48px; align-items: flex-start; }
.columns > div { flex: 0 1 auto; max-width: 600px; }
.glance { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0 4px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px;
        background: var(--band); }
.card .value { font-size: 22px; font-weight: 600; color: #13294b; }
.card .label { font-size: 12px; color: var(--muted); }
figure { margin: 8px 0; max-width: 500px; }
figure.wide { max-width: 760px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: 13px; color: var(--muted); }
footer { max-width: 1120px; margin: 0 auto; padding: 12px 32px 30px; color: var(--muted);
         font-size: 13px; }
a { color: var(--accent); }
"""


def esc(value: object) -> str:
    """``value`` as text safe inside HTML."""
    return html.escape(str(value), quote=True)


def not_available(reason: str) -> str:
    """The one-line stand-in for a part of the run that is not there."""
    return f"<p class='na'>{esc(reason)}</p>"


def png_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, so the page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(png: bytes, alt: str, caption: str, wide: bool = False) -> str:
    """An embedded figure with its caption."""
    css = " class='wide'" if wide else ""
    return (f"<figure{css}><img src='{png_uri(png)}' alt='{esc(alt)}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _draw(make: Callable[[], bytes], alt: str, caption: str, wide: bool = False) -> str:
    """A figure, or a "not available" line naming the error when the data cannot be drawn."""
    try:
        return figure_html(make(), alt, caption, wide)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return not_available(f"not available: the {alt} could not be drawn "
                             f"({type(exc).__name__}: {str(exc)[:120]})")


def table(header: Sequence[str], rows: Iterable[str]) -> str:
    """A table from header titles and ready-made ``<tr>`` rows."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def facts(items: Iterable[tuple[str, str]]) -> str:
    """A definition list of (label, HTML) pairs."""
    return ("<dl class='facts'>"
            + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>")


class Page:
    """Builds the report of one run folder; remembers which metrics it placed."""

    def __init__(self, run: RunFolder, notebook_pages: Mapping[str, str]) -> None:
        self.run = run
        self.notebook_pages = dict(notebook_pages)
        self.metrics: dict = run.metrics or {}
        self.flat = flatten(self.metrics)
        self.placed: set[str] = set()

    # -- values from metrics.json -------------------------------------------------------
    def metric(self, key: str, tag: str = "span", css: str = "") -> str:
        """The value of ``metrics.json`` at ``key``, formatted, in an element naming the key."""
        self.placed.add(key)
        text = format_metric(key, self.flat.get(key))
        cls = f" class='{css}'" if css else ""
        return f"<{tag}{cls} data-metric='{esc(key)}'>{esc(text)}</{tag}>"

    def has(self, key: str) -> bool:
        return key in self.flat

    # -- sections ------------------------------------------------------------------------
    def dataset_name(self) -> str | None:
        info = self.run.run_info or {}
        return info.get("dataset") or self.metrics.get("dataset")

    def what_was_run(self) -> str:
        info = self.run.run_info
        parts = ["<section id='run'><h2>What was run</h2>"]
        name = self.dataset_name()
        provenance = dataset_provenance(str(name)) if name else None
        dataset = (self.metric("dataset") if self.has("dataset") else esc(public_text(name))
                   ) if name else "<span class='na'>not recorded</span>"
        parts.append(facts([
            ("dataset", dataset),
            ("provenance and licence", esc(provenance.line) if provenance else
             "<span class='na'>no provenance recorded for this dataset name</span>")]))
        if info is None:
            parts.append(not_available(self.run.not_available("run.json")))
        else:
            machine = info.get("machine") or {}
            gpus = machine.get("gpus") or []
            reference = machine.get("reference_seconds")
            total = sum(float(s) for s in (info.get("seconds") or {}).values())
            software = facts([
                ("lunglib", esc(info.get("lunglib_version", "?"))),
                ("TensorFlow", esc(info.get("tensorflow_version") or "not installed")),
                ("Python", esc(info.get("python_version", "?"))),
                ("started", esc(info.get("started", "?"))),
                ("finished", esc(info.get("finished", "?"))),
                ("run time", esc(f"{format_number(total, 1)} s for "
                                 f"{len(info.get('seconds') or {})} notebook(s)")),
            ])
            hardware = facts([
                ("platform", esc(machine.get("platform", "?"))),
                ("CPU", esc(f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} core(s) "
                            "usable")),
                ("GPU", esc(", ".join(gpus)) if gpus else "none (ran on the CPU)"),
                ("speed reference",
                 f"<b>{esc(format_number(reference, 3))} s</b>" if reference is not None
                 else "<span class='na'>not measured</span>"),
            ])
            explained = ("<p class='muted'>Speed reference: the "
                         f"{esc(machine.get('reference', REFERENCE_TEXT))}. Compare run times "
                         "of two machines with it: one with twice the reference runs the "
                         "CPU-bound notebooks about twice as slowly.</p>")
            parts.append(f"<div class='columns'><div>{software}</div><div>{hardware}"
                         f"{explained}</div></div>")
        parts.append(
            "<div class='columns'>"
            f"<div><h3>Patients</h3>{self.split_sizes()}</div>"
            f"<div><h3>Settings (papermill parameters)</h3>{self.parameters(info)}</div>"
            f"<div><h3>Notebooks</h3>{self.notebook_table(info)}</div></div>")
        parts.append("</section>")
        return "".join(parts)

    def split_sizes(self) -> str:
        split = self.metrics.get("split")
        lines = []
        if isinstance(split, Mapping) and split:
            rows = [f"<tr><td>{esc(part)}</td>{self.metric(f'split.{part}', 'td', 'num')}</tr>"
                    for part in split]
            lines.append(table(("part of the split", "patients"), rows))
        else:
            lines.append(not_available("not available: the patient split sizes (run notebook "
                                       "07_evaluate, which writes them into metrics.json)"))
        counted = [(label, key) for label, key in (("test patients", "test_patients"),
                                                   ("test samples", "test_samples"))
                   if self.has(key)]
        if counted:
            lines.append(facts((label, self.metric(key)) for label, key in counted))
        return "".join(lines)

    def parameters(self, info: Mapping | None) -> str:
        if info is None:
            return not_available(self.run.not_available("run.json"))
        params = info.get("parameters") or {}
        if not params:
            return "<p>No parameter given: every notebook ran with its own defaults.</p>"
        rows = [f"<tr><td>{esc(k)}</td><td>{esc(format_setting(v))}</td></tr>"
                for k, v in sorted(params.items())]
        return ("<p class='muted'>Given to every notebook that declares them; the others keep "
                "their defaults.</p>" + table(("parameter", "value"), rows))

    def notebook_table(self, info: Mapping | None) -> str:
        seconds = (info or {}).get("seconds") or {}
        names = list(dict.fromkeys([*seconds, *(p.name for p in self.run.notebooks)]))
        if not names:
            return not_available("not available: no executed notebook in the run folder "
                                 "(run the course with `lunglib run`)")
        rows = []
        for name in names:
            page = self.notebook_pages.get(name)
            link = (f"<a href='{esc(page)}'>{esc(name)}</a>" if page else
                    f"{esc(name)} <span class='na'>(no HTML page)</span>")
            rows.append(f"<tr><td>{link}</td>"
                        f"<td class='num'>{esc(format_number(seconds.get(name), 1))}</td></tr>")
        return table(("executed notebook (HTML)", "seconds"), rows)

    def classification(self) -> str:
        parts = ["<section id='classification'><h2>Classification</h2>"]
        metrics = self.metrics.get("classification")
        if not isinstance(metrics, Mapping):
            parts.append(not_available(self.run.not_available("metrics.json")
                                       if self.run.metrics is None else
                                       "not available: metrics.json has no classification "
                                       "part (run notebook 07_evaluate)"))
        else:
            parts.append(self.threshold_line(metrics))
            parts.append(self.classification_table(metrics))
        parts.append(self.classification_figures(metrics if isinstance(metrics, Mapping) else {}))
        parts.append("</section>")
        return "".join(parts)

    def threshold_line(self, metrics: Mapping) -> str:
        if "threshold" not in metrics:
            return not_available("not available: metrics.json records no decision threshold")
        rule = metrics.get("threshold_rule")
        how = ""
        if rule is not None:
            explained = esc(THRESHOLD_RULES.get(str(rule), "see notebook 07"))
            rule_html = self.metric("classification.threshold_rule")
            how = f", chosen on the validation patients by the {rule_html} rule ({explained})"
        return (f"<p>Decision threshold {self.metric('classification.threshold')}{how}; a "
                "probability at or above it counts as cancer.</p>")

    def classification_table(self, metrics: Mapping) -> str:
        intervals = metrics.get("ci95") or {}
        degenerate = degenerate_metrics(metrics)
        names = [m for m in CLASSIFICATION_METRICS if m in metrics]
        names += [m for m in intervals if m not in names and m in metrics]
        rows = []
        for name in names:
            key = f"classification.{name}"
            if name in intervals:
                css = "num ci-degenerate" if name in degenerate else "num"
                ci = self.metric(f"classification.ci95.{name}", "td", css)
                note = (f"<span class='flag'>{esc(DEGENERATE_NOTE)}</span>"
                        if name in degenerate else "")
            else:
                ci, note = "<td class='num na'>no interval</td>", ""
            rows.append(f"<tr><td>{esc(CLASSIFICATION_METRICS.get(name, name))}</td>"
                        f"{self.metric(key, 'td', 'num')}{ci}<td>{note}</td></tr>")
        caption = ("<p class='muted'>Test patients; 95% confidence intervals by the percentile "
                   "bootstrap over patients (all samples of a resampled patient go together). "
                   "An interval of zero width is marked: it means the resamples could not vary "
                   "the metric, not that the metric is certain.</p>")
        flagged = ""
        if "ci_degenerate" in metrics:
            flagged = ("<p class='muted'>Intervals lunglib.evaluation flagged as degenerate: "
                       f"{self.metric('classification.ci_degenerate')}.</p>")
        return caption + table(("metric", "value", "95% CI", ""), rows) + flagged

    def test_predictions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
        """``(y, p, patient)`` of the test rows of predictions.csv, or why there are none."""
        frame = self.run.predictions
        if frame is None:
            return self.run.not_available("predictions.csv")
        needed = {"y_true", "probability", "patient"}
        if not needed <= set(frame.columns):
            return (f"not available: predictions.csv lacks the column(s) "
                    f"{', '.join(sorted(needed - set(frame.columns)))}")
        if "split" in frame.columns:
            frame = frame[frame["split"] == "test"]
        if frame.empty:
            return "not available: predictions.csv holds no test row"
        y = frame["y_true"].to_numpy().astype(int)
        if len(np.unique(y)) < 2:
            return "not available: the test patients hold one class only, so no curve exists"
        return y, frame["probability"].to_numpy(float), frame["patient"].astype(str).to_numpy()

    def classification_figures(self, metrics: Mapping) -> str:
        data = self.test_predictions()
        if isinstance(data, str):
            return "<h3>Figures</h3>" + not_available(data)
        y, p, groups = data
        threshold = metrics.get("threshold")
        threshold = float(threshold) if isinstance(threshold, (int, float)) else None
        brier = metrics.get("brier")
        brier_note = "the Brier score from metrics.json"
        if not isinstance(brier, (int, float)):
            brier = float(brier_score_loss(y, p))
            brier_note = "the Brier score computed by the report from predictions.csv"
        n_patients = pd.unique(groups).size
        shown = [
            _draw(lambda: figures.roc_figure(y, p, groups, threshold), "ROC curve",
                  f"ROC curve of {y.size} test samples from {n_patients} patients; shaded: 95% "
                  "band from 200 patient-bootstrap resamples; dot: the chosen threshold."),
            _draw(lambda: figures.pr_figure(y, p, groups, threshold), "precision-recall curve",
                  "Precision against recall with its 95% patient-bootstrap band; dotted: the "
                  "share of positive samples (a classifier that guesses)."),
        ]
        if threshold is not None:
            shown.append(_draw(lambda: figures.confusion_figure(y, p, threshold),
                               "confusion matrix",
                               "Test samples by truth and prediction at the threshold chosen on "
                               "validation."))
        shown.append(_draw(lambda: figures.calibration_figure(y, p, groups, float(brier)),
                           "calibration curve",
                           f"Observed fraction with cancer against the mean predicted "
                           f"probability in quantile bins, each labelled with its number of "
                           f"patients; title: {brier_note} (lower is better, 0.25 for always "
                           "saying 0.5)."))
        return "<h3>Figures</h3><div class='figures'>" + "".join(shown) + "</div>"

    def segmentation(self) -> str:
        parts = ["<section id='segmentation'><h2>Segmentation</h2>"]
        seg = self.metrics.get("segmentation")
        if isinstance(seg, Mapping):
            summary = [(label, self.metric(f"segmentation.{key}"))
                       for label, key in (("test patients", "patients"),
                                          ("mean Dice per patient", "dice"),
                                          ("mean IoU per patient", "iou"))
                       if key in seg]
            if summary:
                parts.append(facts(summary))
        parts.append(self.segmentation_levels(seg if isinstance(seg, Mapping) else {}))
        parts.append("<h3>Gallery of test cases</h3>")
        if self.run.gallery is None:
            parts.append(not_available(self.run.not_available("segmentation_gallery.npz")))
        else:
            parts.append(_draw(lambda: figures.gallery_figure(self.run.gallery),
                               "segmentation gallery",
                               "One axial slice of the best, median and worst test case by "
                               "Dice: CT in the lung window, the reference mask (red), the "
                               "prediction (cyan) with the reference outlined.", wide=True))
        parts.append("</section>")
        return "".join(parts)

    def segmentation_levels(self, seg: Mapping) -> str:
        levels = seg.get("levels")
        if isinstance(levels, Mapping) and levels:
            keys = list(dict.fromkeys(
                [k for k in SEGMENTATION_COLUMNS if any(k in v for v in levels.values())]
                + [k for v in levels.values() for k in v]))
            rows = [f"<tr><td>{esc(public_text(name))}</td>"
                    + "".join(self.metric(f"segmentation.levels.{name}.{k}", "td", "num")
                              if k in values else "<td class='num na'>n/a</td>" for k in keys)
                    + "</tr>" for name, values in levels.items()]
            return table(("level", *(SEGMENTATION_COLUMNS.get(k, k) for k in keys)), rows)
        frame = self.run.segmentation_levels
        if frame is None:
            return not_available(self.run.not_available("segmentation_levels.csv"))
        rows = [f"<tr><td>{esc(public_text(name))}</td>"
                + "".join(f"<td class='num'>{esc(format_metric(str(col), _plain(v)))}</td>"
                          for col, v in row.items()) + "</tr>"
                for name, row in frame.iterrows()]
        return table(("level", *map(str, frame.columns)), rows)

    def tuning(self) -> str:
        parts = ["<section id='tuning'><h2>Hyperparameter tuning</h2>"]
        results = self.run.search_results
        if results is None:
            parts.append(not_available(self.run.not_available("search_results.csv")))
        elif "score" not in results.columns or results["score"].isna().all():
            parts.append(not_available("not available: search_results.csv has no scores"))
        else:
            parts.append(_draw(lambda: figures.tuning_figure(results), "tuning plot",
                               "Validation ROC-AUC of each trial in the order run; dashed: the "
                               "best so far; circled: the best trial.", wide=True))
            parts.append(self.search_table(results))
        parts.append("<h3>Chosen configuration</h3>")
        config = self.run.best_config
        if config is None:
            parts.append(not_available(self.run.not_available("best_config.json")))
        else:
            rows = [f"<tr><td>{esc(k)}</td><td>{esc(format_setting(_plain(v)))}</td></tr>"
                    for k, v in flatten(config).items()]
            parts.append(table(("setting", "value"), rows))
        parts.append("</section>")
        return "".join(parts)

    def search_table(self, results: pd.DataFrame) -> str:
        best = int(np.nanargmax(results["score"].to_numpy()))
        columns = list(results.columns)
        rows = []
        for position, (_, row) in enumerate(results.iterrows()):
            cells = "".join(self.search_cell(str(col), _plain(v)) for col, v in row.items())
            rows.append(f"<tr{' class=best' if position == best else ''}>{cells}</tr>")
        return (f"<p class='muted'>{len(results)} trials; the best (validation ROC-AUC "
                f"{esc(format_number(float(results['score'].iloc[best])))}) is highlighted.</p>"
                + table(columns, rows))

    @staticmethod
    def search_cell(column: str, value: object) -> str:
        """A cell of the search table: score and seconds as metrics, hyperparameters as set."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"<td>{esc(format_setting(value))}</td>"
        text = format_metric(column, value) if column in ("score", "seconds") else (
            format_setting(value))
        return f"<td class='num'>{esc(text)}</td>"

    def explanations(self) -> str:
        parts = ["<section id='explanations'><h2>Explanations: Grad-CAM of the failures</h2>"]
        failures = self.run.failures
        if failures is None:
            parts.append(not_available(self.run.not_available("failures.npz")))
        elif len(failures["image"]) == 0:
            parts.append("<p>No misclassified test case: there is no failure to explain.</p>")
        else:
            parts.append(_draw(lambda: figures.failures_figure(failures), "Grad-CAM panels",
                               "Misclassified test cases: the input slice, then where the "
                               "network looked (Grad-CAM, red = most) with the true nodule "
                               "outlined in green where known.", wide=True))
        parts.append("</section>")
        return "".join(parts)

    def other_values(self) -> str:
        """Values of metrics.json no section placed, so none is left off the page."""
        left = [k for k in self.flat if k not in self.placed]
        if not left:
            return ""
        rows = [f"<tr><td>{esc(public_text(k))}</td>{self.metric(k, 'td', 'num')}</tr>"
                for k in left]
        return ("<section id='other'><h2>Other values in metrics.json</h2>"
                + table(("key", "value"), rows) + "</section>")

    def at_a_glance(self) -> str:
        """The few numbers a reader wants first, as cards (the same values as the tables)."""
        cards = [(self.metric(key, css="value"), label) for key, label in (
            ("classification.roc_auc", "ROC-AUC, test patients"),
            ("classification.accuracy", "accuracy at the chosen threshold"),
            ("segmentation.dice", "mean Dice per test patient"),
            ("test_patients", "test patients")) if self.has(key)]
        info = self.run.run_info or {}
        seconds = info.get("seconds") or {}
        if seconds:
            total = format_number(sum(float(v) for v in seconds.values()), 1)
            cards.append((f"<span class='value'>{esc(total)} s</span>",
                          f"run time of {len(seconds)} notebook(s)"))
        if not cards:
            return ""
        return "<div class='glance'>" + "".join(
            f"<div class='card'>{value}<div class='label'>{esc(label)}</div></div>"
            for value, label in cards) + "</div>"

    def render(self) -> str:
        body = [self.at_a_glance(), self.what_was_run(), self.classification(),
                self.segmentation(), self.tuning(), self.explanations()]
        body.append(self.other_values())
        name = esc(self.run.name)
        dataset = self.dataset_name()
        subtitle = f"run folder <b>{name}</b>" + (
            f" &middot; dataset {esc(public_text(dataset))}" if dataset else "")
        nav = "".join(f"<a href='#{anchor}'>{title}</a>" for anchor, title in (
            ("run", "What was run"), ("classification", "Classification"),
            ("segmentation", "Segmentation"), ("tuning", "Tuning"),
            ("explanations", "Explanations")))
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>lunglib run report: {name}</title><style>{CSS}</style></head><body>"
            f"<header><h1>lunglib run report</h1><p>{subtitle}</p><nav>{nav}</nav></header>"
            f"<main>{''.join(body)}</main>"
            f"<footer>Built by lunglib {esc(__version__)} on {esc(now_iso())} from the run folder "
            f"{name} (rebuild it with <code>lunglib report {name}</code>). The page is "
            "self-contained: figures are embedded, nothing is loaded from the network.</footer>"
            "</body></html>")


def _plain(value: object) -> object:
    """NumPy scalars as Python numbers (so they format like the values of metrics.json)."""
    return value.item() if isinstance(value, np.generic) else value


def render_page(run: RunFolder, notebook_pages: Mapping[str, str] | None = None) -> str:
    """The report page of ``run`` as HTML; ``notebook_pages`` maps each executed notebook's file
    name to its HTML page's name beside the report."""
    return Page(run, notebook_pages or {}).render()


__all__ = ["CLASSIFICATION_METRICS", "CSS", "Page", "render_page"]
