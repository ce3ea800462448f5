"""Withdrawing an upload: the wrong patient's images leave the case's counts, lists and
reports before sign-off, stay on record, and come back if sent again."""
from __future__ import annotations

import csv
import io

import pytest

from support.app import new_case, upload

REASON = "another patient's images (BM-2026-0142)"


@pytest.fixture
def two_uploads(client, auth, settings, predictor, real_cells) -> tuple[int, list[int], list[int]]:
    """A case with two processed uploads of three real cells each: (case, cells of A, cells of B)."""
    from app.processing.service import Processor

    case_id = new_case(client, auth)
    ids = []
    for part in (real_cells[:3], real_cells[3:]):
        r = upload(client, auth, case_id, part).json()
        cells = [a["cell_id"] for a in r["accepted"]]
        assert Processor(settings, predictor).process(r["upload_id"], cells) == 3
        ids.append((r["upload_id"], cells))
    return case_id, ids[0], ids[1]


def test_a_withdrawn_upload_leaves_every_count_and_list(client, auth, two_uploads):
    case_id, (a, a_cells), (b, b_cells) = two_uploads
    assert client.get(f"/api/cases/{case_id}", headers=auth).json()["cells_total"] == 6

    r = client.post(f"/api/uploads/{a}/withdraw", json={"reason": "x"}, headers=auth)
    assert r.status_code == 422
    r = client.post(f"/api/uploads/{a}/withdraw", json={"reason": REASON}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["withdraw_reason"] == REASON and r.json()["withdrawn_at"]

    case = client.get(f"/api/cases/{case_id}", headers=auth).json()
    assert case["cells_total"] == case["cells_processed"] == 3 and sum(case["counts"].values()) == 3
    assert [c["id"] for c in client.get(f"/api/cases/{case_id}/cells", headers=auth).json()] == b_cells
    rows = [r for r in csv.reader(io.StringIO(client.get(f"/api/cases/{case_id}/cells.csv", headers=auth).text))
            if r and not r[0].startswith("#")]
    assert len(rows) == 1 + 3  # header and B's cells
    r = client.patch(f"/api/cells/{a_cells[0]}", json={"label": "BLA"}, headers=auth)
    assert r.status_code == 409 and "withdrawn" in r.json()["detail"]
    r = client.post(f"/api/uploads/{a}/withdraw", json={"reason": REASON}, headers=auth)
    assert r.status_code == 409 and "already withdrawn" in r.json()["detail"]
    event = [e for e in client.get(f"/api/cases/{case_id}/audit", headers=auth).json() if e["action"] == "withdraw"]
    assert len(event) == 1 and event[0]["detail"] == {"upload_id": a, "cells": 3, "reason": REASON}
    assert event[0]["user"] == "rita"


def test_sending_a_withdrawn_image_again_brings_its_cell_back(client, auth, two_uploads, real_cells, settings,
                                                             predictor):
    from app.processing.service import Processor

    case_id, (a, a_cells), _ = two_uploads
    client.post(f"/api/uploads/{a}/withdraw", json={"reason": REASON}, headers=auth)
    r = upload(client, auth, case_id, real_cells[:1] + real_cells[:1]).json()
    assert [(x["cell_id"], x["duplicate"]) for x in r["accepted"]] == [(a_cells[0], False), (a_cells[0], True)]
    assert client.get(f"/api/cases/{case_id}", headers=auth).json()["cells_total"] == 4
    assert Processor(settings, predictor).process(r["upload_id"], [a_cells[0]]) == 1
    assert a_cells[0] in [c["id"] for c in client.get(f"/api/cases/{case_id}/cells", headers=auth).json()]
    assert client.get(f"/api/uploads/{r['upload_id']}", headers=auth).json()["status"] == "done"


def test_a_signed_case_keeps_its_uploads(client, auth, two_uploads):
    case_id, (a, _), (b, b_cells) = two_uploads
    client.post(f"/api/uploads/{a}/withdraw", json={"reason": REASON}, headers=auth)
    for cell in client.get(f"/api/cases/{case_id}/cells", headers=auth).json():  # no UNK left: it can be signed
        client.patch(f"/api/cells/{cell['id']}", json={"label": "LYT"}, headers=auth)
    assert client.post(f"/api/cases/{case_id}/sign", headers=auth).status_code == 200
    assert client.get(f"/api/cases/{case_id}", headers=auth).json()["counts"]["LYT"] == 3
    r = client.post(f"/api/uploads/{b}/withdraw", json={"reason": REASON}, headers=auth)
    assert r.status_code == 409 and "signed" in r.json()["detail"]
    assert client.post(f"/api/uploads/{2**63}/withdraw", json={"reason": REASON}, headers=auth).status_code == 404
