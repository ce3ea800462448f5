"""The case list after years of cases: filtered and paged by the database, with the same
statuses and matches as each case's own summary."""
from __future__ import annotations

import pytest

from app.cases.models import Case
from app.db import utcnow

from support.app import image_bytes, new_case, upload
from support.servers import on_database


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, settings):
    """The filters are SQL: the same test on both databases a lab runs."""
    return on_database(request, settings)


def test_status_and_accession_filters_agree_with_each_cases_summary(client, auth, sessions, processed_case):
    empty = new_case(client, auth, "BM_2026%1")
    waiting = new_case(client, auth, "bm-2026-2")
    assert upload(client, auth, waiting, [("a.png", image_bytes(1))]).status_code == 202  # no worker here: pending
    signed = new_case(client, auth, "BM-2026-3")
    with sessions() as session:
        session.get(Case, signed).signed_at = utcnow()
        session.commit()
    everything = client.get("/api/cases", headers=auth).json()
    assert {c["id"]: c["status"] for c in everything} == {
        processed_case: "ready", empty: "empty", waiting: "processing", signed: "signed"}

    def ids(**params) -> list[int]:
        r = client.get("/api/cases", params=params, headers=auth)
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()]

    for state in ("ready", "empty", "processing", "signed"):
        assert ids(status=state) == [c["id"] for c in everything if c["status"] == state], state
    assert ids(q="BM-2026") == [signed, waiting]  # any case, newest first
    assert ids(q="_2026%") == [empty]  # % and _ are the accession's characters, not wildcards
    assert ids(q="2026", status="processing") == [waiting]
    assert ids(limit=2) == [signed, waiting]
    assert ids(limit=2, before=waiting) == [empty, processed_case]
    assert ids(q="no such case") == []
    r = client.get("/api/cases", params={"status": "lost"}, headers=auth)
    assert r.status_code == 422 and "processing" in r.text
    for bad in ({"limit": 0}, {"before": 2**63}, {"before": 0}):  # ids are int64: 422, never a database error
        assert client.get("/api/cases", params=bad, headers=auth).status_code == 422, bad
