"""Schemathesis against the app's own OpenAPI schema, in process (no network): a bounded number
of generated requests per operation, valid and invalid, with a valid token, half of them aimed
at a case, cell and upload that exist; no 5xx, on SQLite and on PostgreSQL (which refuses some
values SQLite stores, a NUL character in a text). (Without a token: test_access.py.)"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from support.servers import on_database

from .corpus import image

EXAMPLES_PER_OPERATION = 12
DEADLINE_MS = 5000


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, settings):
    return on_database(request, settings)


def fuzz(operation, ids: dict[str, int], auth: dict[str, str]) -> set[int]:
    """EXAMPLES_PER_OPERATION generated requests to one operation; the status codes seen."""
    seen: set[int] = set()

    @examples(max_examples=EXAMPLES_PER_OPERATION, deadline=DEADLINE_MS, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(), existing=st.booleans())
    def run(case, existing: bool) -> None:
        if existing and case.path_parameters:
            case.path_parameters = {k: ids.get(k, v) for k, v in case.path_parameters.items()}
        response = case.call(headers=auth)
        seen.add(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    run()
    return seen


def test_no_server_errors_on_generated_requests(client, auth):
    case_id = client.post("/api/cases", json={"accession": "FUZZ-1"}, headers=auth).json()["id"]
    r = client.post(f"/api/cases/{case_id}/uploads", headers=auth, files=[("files", ("a.png", image(1)))])
    ids = {"case_id": case_id, "cell_id": r.json()["accepted"][0]["cell_id"], "upload_id": r.json()["upload_id"]}
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    called = {operation.label: fuzz(operation, ids, auth) for operation in operations}
    assert not [(op, codes) for op, codes in called.items() if any(c >= 500 for c in codes)]
    assert {200, 201, 202} & set().union(*called.values())  # the generated requests reach the app
