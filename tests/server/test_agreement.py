"""How the model does in this lab: its first pass against signed labels (/api/model-agreement,
its CSV, the page), through the real app on SQLite; figures worked by hand."""
from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape as html_unescape

import pytest
from sqlalchemy import update

from app.cases.models import Case
from app.cells.models import Cell
from app.ml.dataset import KNOWN_CODES, load_folder_dataset
from app.storage import Storage

from support.app import run_marrow
from support.servers import on_database
from web.conftest import log_in

from .differential_helpers import labelled_case


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, settings):
    """The report is grouped by the database: the same tests on both databases a lab runs."""
    return on_database(request, settings)


def _relabel(client, auth, cell_id: int, label: str) -> None:
    r = client.patch(f"/api/cells/{cell_id}", json={"label": label}, headers=auth)
    assert r.status_code == 200, r.text


def _signed_case(client, auth, sessions, accession: str, labels: list[str], changes: dict[int, str],
                 signed_at: datetime | None = None) -> int:
    case_id, ids = labelled_case(client, auth, sessions, labels, accession)
    for index, label in changes.items():
        _relabel(client, auth, ids[index], label)
    assert client.post(f"/api/cases/{case_id}/sign", headers=auth).status_code == 200
    if signed_at:
        with sessions() as session:
            session.execute(update(Case).where(Case.id == case_id).values(signed_at=signed_at))
            session.commit()
    return case_id


@pytest.fixture
def lab(client, auth, sessions) -> dict[str, int]:
    """Case A (signed 2026-11-30): the model called BLA BLA NGS NGS LYT and sent one cell to UNK;
    the reviewer made the second blast a promyelocyte and the UNK cell a plasma cell.
    Case B (signed 2026-10-15): all four calls kept. Case C: not signed."""
    a = _signed_case(client, auth, sessions, "BM-A", ["BLA", "BLA", "NGS", "NGS", "LYT", "UNK"],
                     {1: "PMO", 5: "PLM"}, datetime(2026, 11, 30, 12, tzinfo=UTC))
    b = _signed_case(client, auth, sessions, "BM-B", ["NGS", "NGS", "LYT", "MON"], {},
                     datetime(2026, 10, 15, 9, tzinfo=UTC))
    c, ids = labelled_case(client, auth, sessions, ["BLA", "BLA"], "BM-C")
    _relabel(client, auth, ids[0], "LYT")
    return {"A": a, "B": b, "C": c}


def test_agreement_ppv_sensitivity_and_unidentified_of_signed_cases(client, auth, lab):
    r = client.get("/api/model-agreement", headers=auth)
    assert r.status_code == 200, r.text
    rep = r.json()
    # 10 cells of the two signed cases; the unsigned case C is not in it
    assert (rep["signed_cases"], rep["cells"], rep["named"], rep["unidentified"]) == (2, 10, 9, 1)
    assert rep["agreed"] == 8 and rep["agreement"]["value"] == pytest.approx(8 / 9, abs=1e-4)
    assert rep["agreement"]["ci_low"] < 8 / 9 < rep["agreement"]["ci_high"]
    assert rep["unidentified_share"]["value"] == pytest.approx(0.1)
    assert rep["unidentified_signed_as"] == {"PLM": 1}
    by = {c["code"]: c for c in rep["categories"]}
    bla, pmo, ngs = by["BLA"], by["PMO"], by["NGS"]
    assert (bla["model_called"], bla["confirmed"], bla["signed_as"]) == (2, 1, 1)
    assert bla["ppv"]["value"] == 0.5 and bla["sensitivity"]["value"] == 1.0
    assert (pmo["model_called"], pmo["signed_as"], pmo["ppv"]["value"], pmo["sensitivity"]["value"]) == (0, 1, None, 0.0)
    assert (ngs["model_called"], ngs["confirmed"], ngs["ppv"]["value"]) == (4, 4, 1.0)
    assert by["PLM"]["sensitivity"]["value"] == 0.0  # the model sent it to UNK: a miss
    assert "UNK" not in by
    assert {"model": "BLA", "signed": "PMO", "cells": 1} in rep["confusion"]
    assert rep["model_versions"] == {"it-random": 10}
    # case A: the model's count alone gives 2/5 = 40 % blasts, the signed one 1/6 = 16.67 %
    blasts = rep["blast_percent_difference"]
    assert blasts["cases_across_a_mark"] == [{"case_id": lab["A"], "accession": "BM-A", "model_blast_percent": 40.0,
                                             "signed_blast_percent": 16.67}]
    assert blasts["max_points"] == pytest.approx(23.33) and blasts["median_points"] == pytest.approx(11.67)
    assert [(m["month"], m["signed_cases"], m["cells"], m["agreed"]) for m in rep["by_month"]] == [
        ("2026-10", 1, 4, 4), ("2026-11", 1, 6, 4)]


def test_the_period_and_the_model_filter(client, auth, lab):
    november = client.get("/api/model-agreement?since=2026-11-01&until=2026-11-30", headers=auth).json()
    assert (november["signed_cases"], november["cells"]) == (1, 6)
    # `until` includes its whole day
    assert client.get("/api/model-agreement?until=2026-11-29", headers=auth).json()["signed_cases"] == 1
    assert client.get("/api/model-agreement?model=another", headers=auth).json()["cells"] == 0
    empty = client.get("/api/model-agreement?since=2027-01-01", headers=auth).json()
    assert (empty["signed_cases"], empty["cells"], empty["agreement"]["value"]) == (0, 0, None)
    r = client.get("/api/model-agreement?since=2026-11-30&until=2026-11-01", headers=auth)
    assert r.status_code == 422 and "until (2026-11-01) is before since (2026-11-30)" in r.json()["detail"]
    assert client.get("/api/model-agreement?since=30.11.2026", headers=auth).status_code == 422
    # the calendar's first and last days are open ends, not a server error
    everything = client.get("/api/model-agreement?since=0001-01-01&until=9999-12-31", headers=auth).json()
    assert everything["cells"] == 10
    assert client.get("/api/model-agreement").status_code == 401


def test_the_csv_has_a_row_per_category(client, auth, lab):
    r = client.get("/api/model-agreement.csv?since=2026-11-01", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0].startswith("# cases signed 2026-11-01 to today (UTC)")
    rows = {row["class_code"]: row for row in csv.DictReader(line for line in lines if not line.startswith("#"))}
    assert (rows["BLA"]["model_called"], rows["BLA"]["confirmed"], rows["BLA"]["ppv"]) == ("2", "1", "0.5000")
    assert rows["PMO"]["ppv"] == "" and rows["PMO"]["sensitivity"] == "0.0000"
    assert float(rows["BLA"]["ppv_ci_low"]) < 0.5 < float(rows["BLA"]["ppv_ci_high"])


def test_the_page_shows_the_period_the_categories_and_the_cases_across_a_mark(client, auth, lab):
    log_in(client, "rita")
    html = client.get("/model-agreement?since=2026-10-01&until=2026-12-31").text
    assert 'id="agreement">88.9 %' in html and "8 of 9 named cells" in html
    assert f'<a href="/cases/{lab["A"]}">BM-A</a>' in html and "40.0" in html and "16.7" in html
    assert "signed as PLM 1" in html
    row = html[html.index('<tr data-code="BLA">'):]
    assert [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', row[:row.index("</tr>")])] == [2, 1, 1]
    assert "2026-10" in html and "2026-11" in html
    assert 'href="/model-agreement"' in client.get("/cases").text  # in the menu
    for query, cells in (("since=2026-10-01&until=2026-10-31", 4), ("since=2026-11-01", 6), ("since=", 10)):
        link = re.search(r'id="agreement-csv" href="([^"]+)"', client.get(f"/model-agreement?{query}").text)[1]
        r = client.get(html_unescape(link))  # the page's download link, with the page's session
        assert r.status_code == 200 and f", {cells} cells;" in r.text, (query, link, r.text[:300])
    opening = (datetime.now(UTC).date() - timedelta(days=90)).isoformat()  # the last 90 days, editable
    assert f'name="since" value="{opening}"' in client.get("/model-agreement").text
    r = client.get("/model-agreement?since=2026-12-01&until=2026-11-01")
    assert r.status_code == 422 and "until (2026-11-01) is before since (2026-12-01)" in r.text
    r = client.get("/model-agreement?since=yesterday")
    assert r.status_code == 422 and "since &#39;yesterday&#39; is not a date (YYYY-MM-DD)" in r.text
    assert "No case was signed in this period" in client.get("/model-agreement?since=2027-06-01").text


def test_export_cells_writes_the_signed_cells_as_a_dataset_evaluate_reads(client, auth, lab, settings, tmp_path):
    dest = tmp_path / "lab-cells"
    done = run_marrow(settings, "export-cells", str(dest), "--since", "2026-10-01")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # cases A and B (the unsigned C is not exported); A's plasma cell is a category no model learns
    assert (out["signed_cases"], out["cells"]) == (2, 9)
    assert out["written"] == {"BLA": 1, "LYT": 2, "MON": 1, "NGS": 4, "PMO": 1} and out["skipped"] == {"PLM": 1}
    samples = load_folder_dataset(dest, KNOWN_CODES)  # the layout `marrow evaluate` and `train` read
    assert len(samples) == 9 and not (dest / "PLM").exists()
    cells = {c["label"]: c["id"] for c in client.get(f"/api/cases/{lab['A']}/cells", headers=auth).json()}
    stored = client.get(f"/api/cells/{cells['PMO']}/image", headers=auth).content
    (pmo,) = (dest / "PMO").iterdir()
    assert pmo.read_bytes() == stored and pmo.suffix == ".png" and "c1" not in pmo.name  # named by hash
    manifest = list(csv.DictReader((dest / "manifest.csv").open()))
    assert {(m["class_code"], m["model_class"]) for m in manifest} >= {("PMO", "BLA"), ("NGS", "NGS")}

    again = json.loads(run_marrow(settings, "export-cells", str(dest), "--all-categories").stdout)
    assert again["written"] == {"PLM": 1} and sum(again["already_there"].values()) == 9
    bad = run_marrow(settings, "export-cells", str(dest), "--since", "2026-12-01", "--until", "2026-11-01")
    assert bad.returncode == 2 and "until (2026-11-01) is before since (2026-12-01)" in bad.stderr


def test_model_agreement_command_prints_the_api_report(client, auth, lab, settings):
    done = run_marrow(settings, "model-agreement", "--until", "2026-10-31")
    assert done.returncode == 0, done.stderr
    assert client.get("/api/model-agreement?until=2026-10-31", headers=auth).json() == json.loads(done.stdout)
    assert json.loads(done.stdout)["cells"] == 4


def test_export_cells_reports_a_lost_image_and_refuses_a_destination_it_cannot_create(
        client, auth, lab, settings, sessions, tmp_path):
    cells = client.get(f"/api/cases/{lab['B']}/cells", headers=auth).json()
    lost = next(c for c in cells if c["label"] == "MON")
    stored = Storage(settings.storage_path)
    with sessions() as session:
        cell = session.get(Cell, lost["id"])
        stored.path(cell.image_path).unlink()
        sha = cell.sha256
    done = run_marrow(settings, "export-cells", str(tmp_path / "out"), "--since", "2026-10-15", "--until", "2026-10-15")
    out = json.loads(done.stdout)
    assert done.returncode == 0 and out["missing_from_storage"] == [sha] and out["cells"] == 3
    assert not (tmp_path / "out" / "MON").exists()

    (tmp_path / "a-file").write_text("not a folder")
    done = run_marrow(settings, "export-cells", str(tmp_path / "a-file" / "out"))
    assert done.returncode == 2 and f"cannot create {tmp_path / 'a-file' / 'out'}: Not a directory" in done.stderr
