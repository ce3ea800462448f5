"""A NUL character in any text a user sends: PostgreSQL cannot store or compare it, so it must be
a 422 that says so, never a 500; SQLite stores it as it is."""
from __future__ import annotations

import pytest

from support.app import new_case
from support.servers import on_database
from web.conftest import csrf_of

REFUSED = "the database refused a value: PostgreSQL text fields cannot contain NUL (0x00) bytes"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, settings):
    return on_database(request, settings)


def test_nul_in_notes_searches_and_names_is_refused_by_postgresql_not_a_server_error(client, auth, settings):
    postgres = settings.database_url is not None
    case_id = new_case(client, auth, "BM-NUL")
    answers = {
        "create": client.post("/api/cases", json={"accession": "BM-N", "note": "n\x00te"}, headers=auth),
        "edit": client.patch(f"/api/cases/{case_id}", json={"note": "x\x00"}, headers=auth),
        "search": client.get("/api/cases", params={"q": "a\x00b"}, headers=auth),
        "login": client.post("/login", data={"name": "ri\x00ta", "password": "a long password",
                                             "csrf_token": csrf_of(client)}, follow_redirects=False),
    }
    for what, r in answers.items():
        assert r.status_code != 500, what
        if postgres:
            assert r.status_code == 422 and REFUSED in r.text, what
    assert client.get(f"/api/cases/{case_id}", headers=auth).json()["note"] == ("" if postgres else "x\x00")
