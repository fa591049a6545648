"""The TCIA downloader against a local stand-in for the NBIA API (nothing leaves the machine)."""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from test_export import write_ct_series

from lunglib.cli import main
from lunglib.datasets.download import (
    DownloadError,
    fetch_series,
    series_folder,
    tcia_series,
)
from lunglib.io.dicom import load_scan


def series_zip(folder: Path, extra: dict[str, bytes] | None = None) -> tuple[dict, bytes]:
    """A flat zip of a 3-slice CT series (``test_export.write_ct_series``), as NBIA sends one
    series, and the uids a ``getSeries`` row gives for it."""
    write_ct_series(folder, n=3)
    files = sorted(folder.glob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in files:
            zf.write(path, path.name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    uids = {"StudyInstanceUID": first.StudyInstanceUID,
            "SeriesInstanceUID": first.SeriesInstanceUID}
    return uids, buffer.getvalue()


def empty_zip() -> bytes:
    buffer = io.BytesIO()
    zipfile.ZipFile(buffer, "w").close()
    return buffer.getvalue()


class FakeNBIA:
    """``getSeries`` answers from ``rows``; ``getImage`` from ``images`` (bytes, an int HTTP
    status, or "truncate" to promise more bytes than it sends)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.images: dict[str, object] = {}
        self.hits: Counter[str] = Counter()
        self.queries: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                url = urllib.parse.urlparse(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                endpoint = url.path.rsplit("/", 1)[-1]
                fake.hits[endpoint] += 1
                if endpoint == "getSeries" and query.get("Collection") == "BROKEN":
                    self._send(500, b"internal error")
                elif endpoint == "getSeries" and query.get("Collection") == "HTML":
                    self._send(200, b"<html>maintenance</html>")
                elif endpoint == "getSeries":
                    fake.queries.append(query)
                    rows = [r for r in fake.rows if r["Collection"] == query.get("Collection")
                            and query.get("PatientID", r["PatientID"]) == r["PatientID"]
                            and query.get("Modality", r["Modality"]) == r["Modality"]]
                    self._send(200, json.dumps(rows).encode() if rows else b"")
                elif endpoint == "getImage":
                    body = fake.images.get(query.get("SeriesInstanceUID", ""), 404)
                    if body == "truncate":
                        data = b"PK" + bytes(90_000)
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data[: len(data) // 3])
                        self.wfile.flush()
                        self.close_connection = True
                    elif isinstance(body, int):
                        self._send(body, b"no such series")
                    else:
                        self._send(200, body)
                else:
                    self._send(404, b"unknown endpoint")

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api = f"http://127.0.0.1:{self.server.server_port}/nbia-api/services/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, patient: str, uids: str | dict, image: object, modality: str = "CT") -> dict:
        """List a series (``uids``: a series uid, or the dict :func:`series_zip` returns)."""
        uids = uids if isinstance(uids, dict) else {"SeriesInstanceUID": uids,
                                                    "StudyInstanceUID": "1.2.3.4"}
        row = {"Collection": "TEST-COLL", "PatientID": patient, **uids, "Modality": modality,
               "ImageCount": 3, "FileSize": 1000}
        self.rows.append(row)
        self.images[row["SeriesInstanceUID"]] = image
        return row


@pytest.fixture()
def nbia():
    fake = FakeNBIA()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_tcia_series_filters_by_patient_and_modality(nbia):
    nbia.add("CASE-0002", "1.2.2", b"")
    nbia.add("CASE-0001", "1.2.1", b"")
    nbia.add("CASE-0001", "1.2.9", b"", modality="PT")
    rows = tcia_series("TEST-COLL", ["CASE-0001", "CASE-0002"], api=nbia.api)
    assert [r["SeriesInstanceUID"] for r in rows] == ["1.2.1", "1.2.2"]
    assert nbia.queries[0] == {"Collection": "TEST-COLL", "PatientID": "CASE-0001",
                               "Modality": "CT"}
    every = tcia_series("TEST-COLL", modality=None, api=nbia.api)
    assert sorted(r["SeriesInstanceUID"] for r in every) == ["1.2.1", "1.2.2", "1.2.9"]
    assert tcia_series("TEST-COLL", ["CASE-9999"], api=nbia.api) == []


def test_tcia_series_errors_name_the_url(nbia):
    with pytest.raises(DownloadError, match=r"getSeries\?Collection=BROKEN.*HTTP 500"):
        tcia_series("BROKEN", api=nbia.api)
    with pytest.raises(DownloadError, match=r"Collection=HTML.*not JSON"):
        tcia_series("HTML", api=nbia.api)
    with pytest.raises(DownloadError, match="could not connect"):
        tcia_series("TEST-COLL", api="http://127.0.0.1:9/services/v1")
    with pytest.raises(ValueError, match="collection is required"):
        tcia_series("", api=nbia.api)


def test_fetch_writes_the_dataset_layout_and_resumes_without_refetching(nbia, tmp_path):
    uids, data = series_zip(tmp_path / "src", extra={"069.xml": b"<LidcReadMessage/>"})
    row = nbia.add("CASE-0001", uids, data)
    uid = uids["SeriesInstanceUID"]
    report = fetch_series([row], tmp_path / "lidc", api=nbia.api, progress=False)
    folder = tmp_path / "lidc" / "CASE-0001" / uids["StudyInstanceUID"] / uid
    assert report.ok and report.written == [folder] and report.present == []
    sent = sorted(p.name for p in (tmp_path / "src").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == sorted([*sent, "069.xml"])
    assert len(sent) == 3
    assert not (tmp_path / "lidc" / ".partial").exists()  # nothing left half-done
    scan = load_scan(tmp_path / "lidc" / "CASE-0001")
    assert scan.shape == (3, 128, 128) and scan.series_uid == uid
    assert scan.spacing[0] == pytest.approx(2.5)

    again = fetch_series([row], tmp_path / "lidc", api=nbia.api, progress=False)
    assert again.written == [] and again.present == [folder]
    assert nbia.hits["getImage"] == 1  # the complete series was not downloaded twice


def test_one_bad_series_never_stops_the_others(nbia, tmp_path):
    rows = [nbia.add("CASE-0001", "1.9.1", b"this is not a zip file"),
            nbia.add("CASE-0002", *series_zip(tmp_path / "src")),
            nbia.add("CASE-0003", "1.9.3", 404),
            nbia.add("CASE-0004", "1.9.4", empty_zip())]
    dest = tmp_path / "dest"
    report = fetch_series(rows, dest, api=nbia.api, progress=False)
    assert report.written == [series_folder(dest, rows[1])]
    assert not report.ok
    by_uid = {f.message.split()[1]: f for f in report.qc}
    assert set(by_uid) == {"1.9.1", "1.9.3", "1.9.4"}
    assert by_uid["1.9.1"].code == "download_damaged"
    assert "holds no files" in by_uid["1.9.4"].message
    assert by_uid["1.9.3"].code == "download_failed" and "404" in by_uid["1.9.3"].message
    assert all(f.file and "getImage" in f.file for f in report.qc)
    assert sorted(p.name for p in dest.iterdir()) == ["CASE-0002"]  # no partial folders


def test_an_interrupted_download_leaves_nothing_and_the_next_run_completes(nbia, tmp_path):
    uids, data = series_zip(tmp_path / "src")
    row = nbia.add("CASE-0001", uids, "truncate")
    dest = tmp_path / "dest"
    first = fetch_series([row], dest, api=nbia.api, progress=False)
    assert first.written == [] and [f.code for f in first.qc] == ["download_failed"]
    assert not series_folder(dest, row).exists()
    assert not list(dest.rglob("*.zip")) and not list(dest.rglob("*.dcm"))

    nbia.images[uids["SeriesInstanceUID"]] = data  # the connection holds this time
    second = fetch_series([row], dest, api=nbia.api, progress=False)
    assert second.ok and second.written == [series_folder(dest, row)]
    assert len(list(series_folder(dest, row).glob("*.dcm"))) == 3


def test_series_folder_refuses_path_tricks(tmp_path):
    with pytest.raises(ValueError, match="unsafe folder name"):
        series_folder(tmp_path, {"PatientID": "..", "StudyInstanceUID": "1",
                                 "SeriesInstanceUID": "2"})
    with pytest.raises(ValueError, match="unsafe folder name"):
        series_folder(tmp_path, {"PatientID": "a/b", "StudyInstanceUID": "1",
                                 "SeriesInstanceUID": "2"})


def test_cli_fetch_lists_downloads_and_refuses_a_whole_collection_by_default(nbia, tmp_path,
                                                                             capsys):
    uids, data = series_zip(tmp_path / "src")
    nbia.add("CASE-0001", uids, data)
    uid = uids["SeriesInstanceUID"]
    base = ["fetch", "--collection", "TEST-COLL", "--api", nbia.api, "--quiet"]
    assert main([*base, "--list"]) == 0
    assert uid in capsys.readouterr().out and nbia.hits["getImage"] == 0
    assert main([*base, "--to", str(tmp_path / "dest")]) == 2  # no --patient, no --all-patients
    assert "--all-patients" in capsys.readouterr().err
    assert main([*base, "--patient", "CASE-0001", "--to", str(tmp_path / "dest")]) == 0
    assert "written 1, already present 0, failed 0" in capsys.readouterr().out
    fetched = next(series_folder(tmp_path / "dest", nbia.rows[0]).glob("*.dcm"))
    assert pydicom.dcmread(fetched).Modality == "CT"
    assert main([*base, "--patient", "CASE-0404", "--to", str(tmp_path / "dest")]) == 1


def test_fetched_lidc_root_ignores_the_partial_folder(nbia, tmp_path):
    from lunglib.datasets import LIDCDataset

    row = nbia.add("LIDC-IDRI-0001", *series_zip(tmp_path / "src"))
    dest = tmp_path / "dest"
    fetch_series([row], dest, api=nbia.api, progress=False)
    leftover = dest / ".partial" / "x.unpacking"  # what a killed unpack leaves behind
    leftover.mkdir(parents=True)
    (leftover / "1-001.dcm").write_bytes(b"half")
    assert LIDCDataset(dest).patient_ids() == ["LIDC-IDRI-0001"]


def test_hostile_archives_and_listings_are_refused_one_series_at_a_time(nbia, tmp_path):
    bomb = io.BytesIO()  # 0.1 MB of zip unpacking to 64 MB of zeros
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("img001.dcm", b"\0" * (64 * 2**20))
    twins = io.BytesIO()  # two members with one name in two folders
    with zipfile.ZipFile(twins, "w") as zf:
        zf.writestr("a/img.dcm", b"first")
        zf.writestr("b/img.dcm", b"second")
    good_uids, good = series_zip(tmp_path / "src")
    rows = [nbia.add("CASE-0001", "1.9.1", bomb.getvalue()),
            nbia.add("../../escape", "1.9.2", b""),
            nbia.add("CASE-0003", "1.9.3", twins.getvalue()),
            nbia.add("CASE-0004", good_uids, good)]
    dest = tmp_path / "dest"
    report = fetch_series(rows, dest, api=nbia.api, progress=False)

    by_uid = {f.message.split()[1].rstrip(":"): f for f in report.qc}
    assert set(by_uid) == {"1.9.1", "1.9.2"}
    assert "unpacks to more than 12 MB" in by_uid["1.9.1"].message  # 200 x the archive
    assert "zip bomb" in by_uid["1.9.1"].message
    assert by_uid["1.9.2"].code == "download_refused" and "unsafe" in by_uid["1.9.2"].message
    assert not (tmp_path / "escape").exists() and not list(dest.rglob("*.unpacking"))
    twin_folder = series_folder(dest, rows[2])
    assert sorted(p.read_bytes() for p in twin_folder.iterdir()) == [b"first", b"second"]
    assert series_folder(dest, rows[3]) in report.written  # the good series still arrives
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) < 10 * 2**20


def test_cli_fetch_says_in_one_line_that_the_server_cannot_be_reached(capsys):
    code = main(["fetch", "--collection", "LIDC-IDRI", "--patient", "LIDC-IDRI-0001",
                 "--to", "unused", "--api", "http://127.0.0.1:9/nbia-api/services/v1"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "could not connect" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
