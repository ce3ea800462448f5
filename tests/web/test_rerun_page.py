"""Re-running a case with another model from its page: the case's model is shown, the form
offers the others while the case is ready, refusals are shown on the page, and the history
says what was re-run."""
from __future__ import annotations

import pytest

from app.config import Settings
from app.db import upgrade
from app.processing.service import Processor

from support.app import image_bytes, new_case, upload


@pytest.fixture
def settings(tmp_path, two_models, model_cache) -> Settings:
    s = Settings(_env_file=None, data_dir=tmp_path / "data", model_dir=two_models / "a",
                 model_cache_dir=model_cache, batch_size=4, task_cells=3)
    upgrade(s.db_url)
    return s


def test_rerun_from_the_case_page(client, auth, page, settings):
    case_id = new_case(client, auth)
    r = upload(client, auth, case_id, [(f"c{i}.png", image_bytes(i)) for i in range(6)])
    upload_id, ids = r.json()["upload_id"], [a["cell_id"] for a in r.json()["accepted"]]
    processor = Processor(settings)
    assert processor.process(upload_id, ids) == 6

    head = client.get(f"/cases/{case_id}/head").text
    assert '<span id="case-model">a (it-random-a)</span>' in head
    assert '<option value="b">b (it-random-b,' in head and '<option value="a">' not in head

    r = client.post(f"/cases/{case_id}/rerun", data={"csrf_token": page, "model": "../a"})
    assert r.status_code == 422 and "unknown model &#39;../a&#39;; expected one of a, b" in r.text

    r = client.post(f"/cases/{case_id}/rerun", data={"csrf_token": page, "model": "b"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{case_id}"
    head = client.get(f"/cases/{case_id}/head").text
    assert "6 processing" in head and "rerun-form" not in head
    r = client.post(f"/cases/{case_id}/rerun", data={"csrf_token": page, "model": "a"})
    assert r.status_code == 409 and "still processing 6 cells" in r.text

    assert processor.process(upload_id, ids) == 6
    case_page = client.get(f"/cases/{case_id}").text
    assert '<span id="case-model">b (it-random-b)</span>' in case_page
    assert '<option value="a">a (it-random-a,' in case_page
    assert "<b>re-run with b</b> (it-random-b, 6 cells), classified with a before" in case_page
    assert client.get(f"/api/cases/{case_id}", headers=auth).json()["model_name"] == "b"

    for cell in client.get(f"/api/cases/{case_id}/cells", headers=auth).json():
        if cell["label"] == "UNK":  # the random model's unsure cells, named by the reviewer
            assert client.patch(f"/api/cells/{cell['id']}", json={"label": "BLA"}, headers=auth).status_code == 200
    assert client.post(f"/cases/{case_id}/sign", data={"csrf_token": page}, follow_redirects=False).status_code == 303
    assert "rerun-form" not in client.get(f"/cases/{case_id}/head").text
    r = client.post(f"/cases/{case_id}/rerun", data={"csrf_token": page, "model": "a"})
    assert r.status_code == 409 and "signed" in r.text
