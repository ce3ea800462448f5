"""Re-running a case with another model (reviewers' labels kept, audited), the worker's UNK
rule for classes outside the case's list, and migration 0003 on a database with cases."""
from __future__ import annotations

import json
from types import SimpleNamespace

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.cells.models import Prediction
from app.config import Settings
from app.db import make_engine, make_sessionmaker, upgrade
from app.processing.service import Processor, product_label

from support.app import image_bytes, make_user, new_case, upload, wait_until_queued


def test_a_rerun_the_broker_refuses_is_answered_and_queued_once_it_takes_it(tmp_path, two_models, model_cache,
                                                                           monkeypatch):
    """The cells a re-run sets pending are saved before they are queued: a broker that refuses
    them (its SQLite folder not there yet) gets them as soon as it takes them, and the request
    is answered instead of failing with a 500 and leaving them pending."""
    from app import queue
    from app.main import create_app

    monkeypatch.setattr(queue, "RETRY_S", (0.2, 0.4))
    root = two_models
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", model_dir=root / "a",
                        model_cache_dir=model_cache, batch_size=4, task_cells=3)
    upgrade(settings.db_url)
    auth = {"Authorization": f"Bearer {make_user(make_sessionmaker(make_engine(settings.db_url)), 'rita')[1]}"}
    with TestClient(create_app(settings)) as client:
        case_id = new_case(client, auth)
        r = upload(client, auth, case_id, [("c1.png", image_bytes(1)), ("c2.png", image_bytes(2))])
        assert Processor(settings).process(r.json()["upload_id"], [a["cell_id"] for a in r.json()["accepted"]]) == 2
        folder = tmp_path / "broker-not-mounted"
        monkeypatch.setattr(settings, "broker_url", f"sqla+sqlite:///{folder}/broker.sqlite")
        r = client.post(f"/api/cases/{case_id}/rerun", json={"model": "b"}, headers=auth)
        assert r.status_code == 202 and r.json()["cells_queued"] == 2
    folder.mkdir()
    wait_until_queued(folder / "broker.sqlite", 1)


def test_rerun_with_another_model_keeps_reviewer_labels_and_is_audited(tmp_path, two_models, model_cache):
    root = two_models
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", model_dir=root / "a",
                        model_cache_dir=model_cache, batch_size=4, task_cells=3)
    upgrade(settings.db_url)
    sessions = make_sessionmaker(make_engine(settings.db_url))
    auth = {"Authorization": f"Bearer {make_user(sessions, 'rita')[1]}"}
    from app.main import create_app

    with TestClient(create_app(settings)) as client:
        models = client.get("/api/models", headers=auth).json()
        assert [(m["name"], m["version"], m["configured"]) for m in models] == [
            ("a", "it-random-a", True), ("b", "it-random-b", False)]
        case_id = new_case(client, auth)
        r = upload(client, auth, case_id, [(f"c{i}.png", image_bytes(i)) for i in range(6)])
        upload_id, ids = r.json()["upload_id"], [a["cell_id"] for a in r.json()["accepted"]]
        processor = Processor(settings)
        assert processor.process(upload_id, ids) == 6
        before = {c["id"]: c for c in client.get(f"/api/cases/{case_id}/cells", headers=auth).json()}
        assert {c["model_version"] for c in before.values()} == {"it-random-a"}
        kept = ids[0]
        new = "PLM"
        assert client.patch(f"/api/cells/{kept}", json={"label": new}, headers=auth).status_code == 200

        assert client.post(f"/api/cases/{case_id}/rerun", json={"model": "../a"}, headers=auth).status_code == 422
        r = client.post(f"/api/cases/{case_id}/rerun", json={"model": "b"}, headers=auth)
        assert r.status_code == 202, r.text
        assert r.json() == {"case_id": case_id, "model": "b", "model_version": "it-random-b", "cells_queued": 6}
        case = client.get(f"/api/cases/{case_id}", headers=auth).json()
        assert case["status"] == "processing" and case["model_name"] == "b"
        assert client.post(f"/api/cases/{case_id}/sign", headers=auth).status_code == 409

        assert processor.process(upload_id, ids) == 6
        after = {c["id"]: c for c in client.get(f"/api/cases/{case_id}/cells", headers=auth).json()}
        assert {c["model_version"] for c in after.values()} == {"it-random-b"}
        assert (after[kept]["label"], after[kept]["label_source"]) == (new, "reviewer")
        changed = [i for i in ids[1:] if after[i]["label"] != before[i]["label"]]
        for i in ids[1:]:
            assert after[i]["label_source"] == "model" and after[i]["label"] == after[i]["predicted"]
        with sessions() as session:
            events = session.scalars(select(AuditEvent).where(AuditEvent.case_id == case_id)).all()
        rerun = [e for e in events if e.action == "rerun"]
        assert [(e.from_value, e.to_value) for e in rerun] == [("a", "b")]
        assert sorted(e.cell_id for e in events if e.action == "model_label") == sorted(changed)

        # back to the configured model: its predictions are the newest again
        assert client.post(f"/api/cases/{case_id}/rerun", json={"model": "a"}, headers=auth).status_code == 202
        assert processor.process(upload_id, ids) == 6
        again = {c["id"]: c for c in client.get(f"/api/cases/{case_id}/cells", headers=auth).json()}
        assert {c["model_version"] for c in again.values()} == {"it-random-a"}
        assert all(again[i]["label"] == before[i]["label"] for i in ids[1:])
        with sessions() as session:
            assert session.scalar(select(sa.func.count()).select_from(Prediction)) == 12  # a and b per cell

        client.patch(f"/api/cells/{kept}", json={"label": "BLA"}, headers=auth)
        assert client.post(f"/api/cases/{case_id}/sign", headers=auth).status_code == 200
        r = client.post(f"/api/cases/{case_id}/rerun", json={"model": "b"}, headers=auth)
        assert r.status_code == 409 and "signed" in r.json()["detail"]


def test_a_class_outside_the_case_list_is_unidentified():
    named = SimpleNamespace(code="BLA", label="BLA", unidentified=None)
    assert product_label(named, {"BLA", "NGS"}) == ("BLA", None)
    assert product_label(named, {"NGS"}) == ("UNK", "class BLA is not in the case's category list")
    unk = SimpleNamespace(code="BLA", label="UNK", unidentified="not a stained cell: no stain")
    assert product_label(unk, {"BLA"}) == ("UNK", "not a stained cell: no stain")


def test_existing_cases_get_the_default_list(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url, "0002")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO cases (accession, specimen, note, created_at) "
                             "VALUES ('OLD-7', 'bone marrow', '', CURRENT_TIMESTAMP)"))
    upgrade(url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT categories FROM cases")).scalar_one()
        lab = [r[0] for r in conn.execute(sa.text("SELECT code FROM lab_categories ORDER BY position"))]
    codes = [c["code"] for c in json.loads(stored)]
    assert codes == lab and {"BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO", "PLM", "EBO"} <= set(codes)
    engine.dispose()
