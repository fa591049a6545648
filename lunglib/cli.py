"""The command line: ``python -m lunglib {synth,load,fetch,prepare,run,demo,report,predict}``.

Each sub-command is a thin shell over a library function; see ``python -m lunglib -h``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path

from lunglib.settings import default_data_root, project_root


def _parse_parameter(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"parameter {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value: object = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # plain strings need no quotes: -p dataset=lidc
    return key.strip(), value


def _cmd_synth(args: argparse.Namespace) -> int:
    from lunglib.synthetic import write_cohort

    kwargs = {"seed": args.seed, "difficulty": args.difficulty,
              "full_resolution": args.full_resolution}
    if args.patients is not None:
        kwargs["n_patients"] = args.patients
    out = write_cohort(args.out, **kwargs)
    print(f"synthetic cohort written to {out}")
    return 0


def _cmd_load(args: argparse.Namespace) -> int:
    from lunglib.io.dicom import DicomLoadError, list_series, load_scan
    from lunglib.io.image import image_suffix

    if args.batch:
        return _load_batch(args)

    try:
        series = [] if image_suffix(args.path) else list_series(args.path)
        scan = load_scan(args.path, series_uid=args.series_uid)
    except DicomLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if series:
        print(f"{len(series)} series found:")
    for info in series:
        marker = "*" if info.series_uid == scan.series_uid else " "
        print(f" {marker} {info}")
    for key, value in scan.describe().items():
        print(f"{key:>22}: {value}")
    return 0


def _load_batch(args: argparse.Namespace) -> int:
    """``load --batch``: one line per scan of a folder and a ``summary.csv``."""
    from lunglib.batch import run_batch
    from lunglib.io.dicom import load_scan

    def work(item: Path, out: Path) -> dict[str, object]:
        info = load_scan(item).describe()
        qc = info["qc"]
        return {"patient_key": info["patient_key"], "shape_zyx": info["shape_zyx"],
                "spacing_zyx_mm": info["spacing_zyx_mm"],
                "qc": qc if isinstance(qc, str) else " | ".join(qc)}

    output = args.output or Path("load")
    try:
        summary = run_batch(args.path, output, work, ["shape_zyx", "spacing_zyx_mm", "qc"],
                            desc="loading")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.drop(columns=["reason"]).to_string(index=False))
    return _batch_exit(summary, output, "loaded; summary.csv")


def _run(args: argparse.Namespace, output: Path) -> int:
    from lunglib.pipeline import PipelineError, course_notebooks, headline, run_course

    params = dict(args.parameter or [])
    for name in ("dataset", "data_dir", "labels"):
        value = getattr(args, name, None)
        if value:
            params[name] = str(value)
    if not course_notebooks():
        print("no course notebooks found in notebooks/", file=sys.stderr)
        return 2
    try:
        result = run_course(output, params)
    except (PipelineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from lunglib.report.runinfo import REFERENCE_TEXT

    total = sum(result.seconds.values())
    print(f"\nall {len(result.notebooks)} notebooks ran in {total:.0f} s "
          f"({', '.join(f'{Path(n).stem[:2]} {s:.0f}' for n, s in result.seconds.items())}) "
          f"on a machine with speed reference {result.reference_seconds:.3f} s "
          f"({REFERENCE_TEXT})")
    print(f"report: {result.report}")
    print(f"metrics: {headline(result.metrics)}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    """``prepare``: a dataset into the cache, on a LocalCluster or a Dask cluster; counts only."""
    from lunglib.course import course_settings, open_course_dataset
    from lunglib.preprocess.cache import cache_dataset, cache_key, remove_stale_files
    from lunglib.settings import display_path

    try:
        settings = course_settings(data_dir=args.data_dir or "", labels=args.labels or "",
                                   size=args.size, n_slices=args.n_slices,
                                   cache_dir=args.cache_dir or "")
        dataset = open_course_dataset(args.dataset, settings)
        if args.cleanup:
            folder = Path(settings.cache_dir) / cache_key(dataset, settings)
            removed = remove_stale_files(folder, 0) if folder.is_dir() else 0
            print(f"removed {removed} leftover temporary file(s)")
        index = cache_dataset(dataset, settings, workers=args.workers, scheduler=args.scheduler,
                              progress=not args.quiet)
    except (ValueError, FileNotFoundError, ConnectionError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    skipped = len(index.skipped)
    print(f"{len(index)} of {len(index.qc_rows)} scan(s) prepared, {skipped} skipped"
          f"{' (reasons in qc.csv)' if skipped else ''} -> {display_path(index.folder)}")
    return 1 if skipped else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from lunglib.report import NotARunFolderError, build_report

    try:
        index = build_report(args.run_dir, notebooks=not args.no_notebooks)
    except NotARunFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    return _run(args, Path(args.output))


def _cmd_demo(args: argparse.Namespace) -> int:
    return _run(args, project_root() / "outputs" / "demo")


def _quiet_tensorflow(verbose: bool) -> None:
    """Import TensorFlow without its native start-up lines (CUDA probe, CPU features) on the
    terminal, unless ``verbose``: a command's output is its answer."""
    if verbose:
        return
    import logging

    from lunglib.course import import_tensorflow_quietly

    import_tensorflow_quietly()
    logging.getLogger("absl").setLevel(logging.ERROR)


def _cmd_predict(args: argparse.Namespace) -> int:
    _quiet_tensorflow(args.verbose)
    if args.batch:
        return _predict_batch(args)
    from lunglib.io.dicom import DicomLoadError
    from lunglib.models.bundle import BundleFormatError
    from lunglib.predict import predict_scan

    output = args.output or Path(args.model) / "predictions" / Path(args.scan).name
    try:
        result = predict_scan(args.scan, args.model, output, series_uid=args.series_uid)
    except (DicomLoadError, FileNotFoundError, BundleFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    p = result.cancer_probability
    print(f"patient {result.patient_key}: cancer probability "
          + ("n/a" if p is None else f"{p:.3f}"))
    print(f"{len(result.candidates)} nodule candidate(s)")
    if len(result.candidates):
        columns = ["candidate", "peak_prob", "diameter_mm", "volume_mm3", "x_mm", "y_mm", "z_mm"]
        if result.ranking == "nodule_reducer":
            columns[1:1] = ["reducer_score", "segmenter_rank"]
        print(f"ranked by the {result.ranking}:")
        print(result.candidates[columns].head(10).round(2).to_string(index=False))
    for note in result.notes:
        print(f"note: {note}")
    for name, path in result.files.items():
        print(f"{name:>10}: {path}")
    return 0


def _predict_batch(args: argparse.Namespace) -> int:
    from lunglib.predict import predict_batch

    output = args.output or Path(args.model) / "predictions"
    try:
        summary = predict_batch(args.scan, args.model, output, num_parts=args.num_parts,
                                part_id=args.part_id)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _batch_exit(summary, output, "predicted")


def _batch_exit(summary, output: Path, done: str) -> int:
    """Name the failed scans on stderr, count the rest; exit code 1 when any scan failed."""
    failed = summary[summary["status"] != "ok"]
    for row in failed.itertuples():
        print(f"failed: {row.scan}: {row.reason}", file=sys.stderr)
    print(f"{len(summary) - len(failed)} of {len(summary)} scan(s) {done} into {output}")
    return 1 if len(failed) else 0


def _cmd_characterize(args: argparse.Namespace) -> int:
    if not args.at and args.annotation is None:
        print("error: give the nodules to characterise: --at x,y,z (one or more) or --from an "
              "annotation file", file=sys.stderr)
        return 2
    _quiet_tensorflow(args.verbose)
    from lunglib.batch import scan_name
    from lunglib.characterize import characterize_batch, characterize_scan
    from lunglib.io.dicom import DicomLoadError
    from lunglib.models.bundle import BundleFormatError

    if args.batch:
        output = args.output or Path("characterize")
        try:
            summary = characterize_batch(args.scan, output, at=args.at, voxel=args.voxel,
                                         annotation=args.annotation, num_parts=args.num_parts,
                                         part_id=args.part_id)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return _batch_exit(summary, output, "characterized")
    output = args.output or Path("characterize") / scan_name(Path(args.scan))
    try:
        result = characterize_scan(args.scan, at=args.at, voxel=args.voxel,
                                   annotation=args.annotation, output_dir=output,
                                   series_uid=args.series_uid)
    except (DicomLoadError, FileNotFoundError, BundleFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"patient {result.patient_key}: {len(result.table)} nodule(s)")
    columns = [c for c in ("nodule", "long_axis_mm", "short_axis_mm", "volume_mm3", "mean_hu",
                           "malignancy", "dice_consensus", "malignancy_by_reader")
               if c in result.table and result.table[c].notna().any()]
    if len(result.table):
        print(result.table[columns].round(3).to_string(index=False))
    for note in result.notes:
        print(f"note: {note}")
    print("models: lunglib's shipped nodule_unet and malignancy (LIDC-IDRI; research and "
          "teaching, not a medical device)")
    for name, path in result.files.items():
        print(f"{name:>8}: {path}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from lunglib.datasets.download import NBIA_API, DownloadError, fetch_series, tcia_series

    api = args.api or NBIA_API
    if args.to is None and not args.list:
        print("say where to put the series: --to data/lidc (or --list to only list them)",
              file=sys.stderr)
        return 2
    if not args.patient and not (args.list or args.all_patients):
        print("name the patients to fetch (--patient LIDC-IDRI-0001, repeatable), or pass "
              "--all-patients to fetch the whole collection (LIDC-IDRI is about 125 GB)",
              file=sys.stderr)
        return 2
    try:
        series = tcia_series(args.collection, args.patient, modality=args.modality or None,
                             api=api)
    except DownloadError as exc:  # unreachable server, HTTP error, not NBIA: one line, no trace
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not series:
        print(f"no {args.modality or ''} series of {args.collection} match "
              f"{args.patient or 'the query'}", file=sys.stderr)
        return 1
    total_mb = sum(float(s.get("FileSize") or 0) for s in series) / 2**20
    print(f"{len(series)} series of {len(set(s['PatientID'] for s in series))} patient(s), "
          f"{total_mb:.0f} MB:")
    for s in series:
        print(f"  {s['PatientID']}  {s.get('Modality', '?'):>3}  {s.get('ImageCount', '?'):>4} "
              f"images  {s['SeriesInstanceUID']}")
    if args.list:
        return 0
    report = fetch_series(series, args.to, api=api, progress=not args.quiet)
    print(f"written {len(report.written)}, already present {len(report.present)}, "
          f"failed {len(report.qc)} -> {args.to}")
    for finding in report.qc:
        print(f"{finding.severity}: {finding.message}", file=sys.stderr)
    return 0 if report.ok else 1


def _add_batch_arguments(parser: argparse.ArgumentParser, outputs: str) -> None:
    """``--batch``, ``--num-parts`` and ``--part-id`` (:mod:`lunglib.batch`)."""
    parser.add_argument("--batch", action="store_true",
                        help="SCAN is a folder of scans (each sub-folder and each volume file "
                        f"is one); {outputs}")
    parser.add_argument("--num-parts", type=int, default=1,
                        help="with --batch: split the scans into this many parts ...")
    parser.add_argument("--part-id", type=int, default=0,
                        help="... and do part K (0-based): one job per part")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lunglib",
        description="Lung cancer classification and segmentation in chest CT: the course's "
        "command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the synthetic chest-CT cohort as DICOM")
    synth.add_argument("--out", type=Path, default=default_data_root() / "synthetic")
    synth.add_argument("--patients", type=int, default=None, help="default: the course cohort")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--difficulty", type=float, default=0.5, help="0 easy ... 1 hard")
    synth.add_argument("--full-resolution", action="store_true", help="512x512 slices")
    synth.set_defaults(func=_cmd_synth)

    load = sub.add_parser("load", help="load one scan and print its de-identified QC summary")
    load.add_argument("path", type=Path, help="a folder of one patient's DICOM files, or one "
                      "NIfTI/NRRD/MetaImage volume")
    load.add_argument("--series-uid", default=None)
    load.add_argument("--batch", action="store_true",
                      help="PATH is a folder of scans: one line each, and a summary.csv")
    load.add_argument("--output", type=Path, default=None,
                      help="with --batch: where summary.csv goes (default: ./load)")
    load.set_defaults(func=_cmd_load)

    fetch = sub.add_parser("fetch", help="download public CT series from TCIA (LIDC-IDRI, "
                           "Lung-PET-CT-Dx, ...) into a dataset folder, resumably")
    fetch.add_argument("--collection", required=True, help="e.g. LIDC-IDRI, Lung-PET-CT-Dx")
    fetch.add_argument("--patient", action="append", default=None,
                       help="a case id such as LIDC-IDRI-0001 (repeatable)")
    fetch.add_argument("--to", type=Path, default=None, help="the dataset folder to fill")
    fetch.add_argument("--modality", default="CT", help="'' keeps every modality")
    fetch.add_argument("--list", action="store_true", help="only list the series")
    fetch.add_argument("--all-patients", action="store_true",
                       help="fetch every patient of the collection")
    fetch.add_argument("--quiet", action="store_true", help="no progress bars")
    fetch.add_argument("--api", default=None, help="NBIA API address (default: TCIA's)")
    fetch.set_defaults(func=_cmd_fetch)

    prepare = sub.add_parser(
        "prepare", help="prepare a dataset into the cache (one Dask task per patient, on this "
        "machine or a Dask cluster) and print the counts; exit code 1 when any scan is skipped")
    prepare.add_argument("--dataset", default="synthetic",
                         help="synthetic, dsb2017, lidc, luna16, lung-pet-ct-dx")
    prepare.add_argument("--data-dir", type=Path, default=None,
                         help="the dataset's folder (default for synthetic: the course cohort)")
    prepare.add_argument("--labels", type=Path, default=None)
    prepare.add_argument("--size", type=int, default=None, help="default: $LUNGLIB_SIZE or 64")
    prepare.add_argument("--n-slices", type=int, default=None,
                         help="default: $LUNGLIB_N_SLICES or 32")
    prepare.add_argument("--cache-dir", type=Path, default=None,
                         help="default: $LUNGLIB_CACHE_DIR or data/cache")
    where = prepare.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="a running Dask scheduler; its workers must see the data and the "
                       "cache folder at the same paths (default: $DASK_SCHEDULER_ADDRESS, else "
                       "a LocalCluster)")
    where.add_argument("--workers", type=int, default=2,
                       help="processes of the LocalCluster on this machine; 1 prepares in "
                       "this process (default: 2)")
    prepare.add_argument("--cleanup", action="store_true",
                         help="first remove every leftover temporary file of the cache folder, "
                         "whatever its age: only when no other run prepares into it")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(func=_cmd_prepare)

    report = sub.add_parser("report", help="(re)build the report page of a run folder and "
                            "print its path")
    report.add_argument("run_dir", type=Path, help="a folder written by `lunglib run`")
    report.add_argument("--no-notebooks", action="store_true",
                        help="only the page, not the notebooks' HTML (faster)")
    report.set_defaults(func=_cmd_report)

    predict = sub.add_parser("predict", help="cancer probability, nodule candidates, masks and "
                             "a report for one scan, from a finished run's models")
    predict.add_argument("scan", type=Path, help="a folder of one patient's DICOM files, or "
                         "one NIfTI/NRRD/MetaImage volume")
    predict.add_argument("--model", type=Path, required=True,
                         help="a run folder (or notebook output_dir) with the model bundles")
    predict.add_argument("--output", type=Path, default=None,
                         help="default: <model>/predictions/<scan folder name>")
    predict.add_argument("--series-uid", default=None)
    _add_batch_arguments(predict, "one output folder each and a summary.csv")
    predict.add_argument("--verbose", action="store_true",
                         help="let TensorFlow print its native log lines (CUDA, CPU features)")
    predict.set_defaults(func=_cmd_predict)

    characterize = sub.add_parser(
        "characterize", help="outline, measure and score nodules at given points of one scan "
        "with lunglib's shipped real-data models")
    characterize.add_argument("scan", type=Path, help="a folder of one patient's DICOM files, "
                              "or one NIfTI/NRRD/MetaImage volume")
    characterize.add_argument("--at", action="append", default=None, metavar="X,Y,Z",
                              help="a point inside a nodule: patient coordinates in mm (DICOM "
                              "LPS), or voxel column,row,slice with --voxel (repeatable)")
    characterize.add_argument("--voxel", action="store_true",
                              help="--at gives voxel indices (column, row, slice)")
    characterize.add_argument("--from", dest="annotation", type=Path, default=None,
                              help="an annotation file: LIDC readers' XML, LUNA16 "
                              "annotations.csv, Lung-PET-CT-Dx boxes (a folder of VOC XML), or "
                              "a CSV of points (x_mm,y_mm,z_mm or x,y,z voxel columns)")
    characterize.add_argument("--output", type=Path, default=None,
                              help="default: ./characterize/<scan folder or file name>")
    _add_batch_arguments(characterize, "--from is read against each; one output folder each "
                         "and a summary.csv")
    characterize.add_argument("--series-uid", default=None)
    characterize.add_argument("--verbose", action="store_true",
                              help="let TensorFlow print its native log lines")
    characterize.set_defaults(func=_cmd_characterize)

    for name, func, text in (
        ("run", _cmd_run, "run every notebook with papermill into one run folder"),
        ("demo", _cmd_demo, "the main job: every notebook on the default data (make demo)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--dataset", default=None, help="synthetic, dsb2017, lidc, ...")
        cmd.add_argument("--data-dir", type=Path, default=None)
        cmd.add_argument("--labels", type=Path, default=None)
        cmd.add_argument("-p", "--parameter", type=_parse_parameter, action="append",
                         metavar="KEY=VALUE", help="a notebook parameter (repeatable)")
        if name == "run":
            cmd.add_argument("--output", default=project_root() / "outputs" / "run")
        cmd.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
