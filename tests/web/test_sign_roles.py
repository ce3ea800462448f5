"""MARROW_SIGN_ROLES: a lab where technologists classify and pathologists sign."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from support.app import make_user

from .conftest import log_in


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"sign_roles": "pathologist,admin"})


def test_only_the_roles_named_may_sign(client, auth, sessions, processed_case):
    from app.config import Settings

    assert Settings(_env_file=None, sign_roles=" pathologist , admin ").signers == {"pathologist", "admin"}
    for cell in client.get(f"/api/cases/{processed_case}/cells", headers=auth).json():  # no UNK left
        client.patch(f"/api/cells/{cell['id']}", json={"label": "LYT"}, headers=auth)
    r = client.post(f"/api/cases/{processed_case}/sign", headers=auth)  # rita, a reviewer
    assert r.status_code == 403
    assert r.json()["detail"] == "only admin or pathologist accounts may sign a case off; rita is a reviewer"

    page = TestClient(client.app)
    log_in(page, "rita")
    head = page.get(f"/cases/{processed_case}").text
    assert "Signed off by admin or pathologist accounts" in head and ">Sign off</button>" not in head

    _, paul = make_user(sessions, "paul", "pathologist")
    r = client.post(f"/api/cases/{processed_case}/sign", headers={"Authorization": f"Bearer {paul}"})
    assert r.status_code == 200 and r.json()["signed_by"] == "paul"
