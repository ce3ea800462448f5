"""The worker's processing with the real model: results, files, progress, and idempotency."""
from __future__ import annotations

import io

import numpy as np
import pytest

from PIL import Image
from sqlalchemy import func, select, update

from app.cases.models import Upload
from app.cells.models import Cell, Prediction
from app.ml import encode
from app.processing.service import Processor
from app.storage import Storage

CODES = {"BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO"}


def test_processed_cells_have_predictions_files_and_labels(client, auth, processed_case, settings, sessions):
    case = client.get(f"/api/cases/{processed_case}", headers=auth).json()
    assert (case["status"], case["cells_total"], case["cells_processed"]) == ("ready", 6, 6)
    # issue 13: counts hold UNK and the case's category list, a superset of the model's classes
    assert sum(case["counts"].values()) == 6 and set(case["counts"]) == {"UNK", *(c["code"] for c in case["categories"])}
    assert CODES <= set(case["counts"])
    assert "NIF" not in case["differential"]
    assert abs(sum(case["differential"].values()) - 100) < 0.1 or case["counts"]["NIF"] == 6

    cells = client.get(f"/api/cases/{processed_case}/cells", headers=auth).json()
    assert len(cells) == 6
    for cell in cells:
        assert {"id", "filename", "predicted", "probability", "top3", "label", "label_source", "version",
                "quality_flags"} <= set(cell)
        assert cell["predicted"] in CODES
        # the product's label: the model's class, or UNK with the reason it would not name the cell
        assert cell["label"] == cell["predicted"] or (cell["label"] == "UNK" and cell["unidentified"])
        assert (cell["label_source"], cell["version"], cell["status"]) == ("model", 1, "done")
        assert len(cell["top3"]) == 3 and cell["top3"][0]["p"] == round(cell["probability"], 6)
        assert isinstance(cell["quality_flags"], list) and "brightness" in cell["quality"]
    for kind, fmt in (("image", "JPEG"), ("thumbnail", "JPEG"), ("gradcam", "JPEG")):
        r = client.get(f"/api/cells/{cells[0]['id']}/{kind}", headers=auth)
        assert r.status_code == 200, (kind, r.text)
        with Image.open(io.BytesIO(r.content)) as im:
            assert im.format == fmt and max(im.size) > 8
    with sessions() as session:
        upload = session.scalars(select(Upload)).one()
        assert (upload.status, upload.cells_done, upload.cells_total) == ("done", 6, 6)
        probs = session.scalars(select(Prediction.probs)).first()
        assert set(probs) == CODES and abs(sum(probs.values()) - 1) < 1e-3


def test_processing_twice_creates_nothing_twice(client, auth, processed_case, settings, predictor, sessions):
    with sessions() as session:
        ids = session.scalars(select(Cell.id)).all()
        upload_id = session.scalar(select(Upload.id))
    relabelled = ids[0]
    assert client.patch(f"/api/cells/{relabelled}", json={"label": "EOS"}, headers=auth).status_code == 200

    processor = Processor(settings, predictor)
    assert processor.process(upload_id, ids) == 0  # redelivered task: everything is done
    with sessions() as session:  # a worker died after writing files but before marking the cells
        session.execute(update(Cell).values(status="pending"))
        session.commit()
    assert processor.process(upload_id, ids) == 6
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 6
        assert session.scalar(select(func.count()).select_from(Cell)) == 6
        cell = session.get(Cell, relabelled)
        assert (cell.label, cell.label_source, cell.version) == ("EOS", "reviewer", 2)  # never overwritten
    assert client.get(f"/api/cases/{processed_case}", headers=auth).json()["cells_processed"] == 6


def test_unreadable_stored_image_fails_only_its_cell(client, auth, settings, predictor, sessions, real_cells):
    from support.app import new_case, upload

    case_id = new_case(client, auth)
    r = upload(client, auth, case_id, real_cells[:2]).json()
    ids = [x["cell_id"] for x in r["accepted"]]
    with sessions() as session:
        broken = session.get(Cell, ids[0])
        (settings.storage_path / broken.image_path).write_bytes(b"damaged on disk")
    assert Processor(settings, predictor).process(r["upload_id"], ids) == 2
    cells = {c["id"]: c for c in client.get(f"/api/cases/{case_id}/cells", headers=auth).json()}
    assert cells[ids[0]]["status"] == "failed" and "unreadable" in cells[ids[0]]["quality_flags"]
    assert cells[ids[1]]["status"] == "done"
    assert client.get(f"/api/cells/{ids[0]}/gradcam", headers=auth).status_code == 404
    assert client.get(f"/api/cases/{case_id}", headers=auth).json()["cells_processed"] == 2


def test_cell_files_are_cached_by_content_hash(client, auth, processed_case, sessions):
    """A revalidation with the ETag gets 304 and no body; a caller without a token still gets
    401, never a 304 that would confirm what the file is."""
    cell = client.get(f"/api/cases/{processed_case}/cells", headers=auth).json()[0]
    with sessions() as session:
        digest = session.get(Cell, cell["id"]).sha256
    for kind in ("image", "thumbnail", "gradcam"):
        url = f"/api/cells/{cell['id']}/{kind}"
        first = client.get(url, headers=auth)
        etag = first.headers["etag"]
        assert first.status_code == 200 and first.content
        assert first.headers["cache-control"] == "private, max-age=31536000, immutable"
        assert digest in etag
        again = client.get(url, headers={**auth, "If-None-Match": etag})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
        assert client.get(url, headers={**auth, "If-None-Match": '"other"'}).status_code == 200
        anonymous = client.get(url, headers={"If-None-Match": etag})
        assert anonymous.status_code == 401 and "etag" not in anonymous.headers


def test_a_stored_file_that_is_gone_is_a_404_naming_it(client, auth, processed_case, settings, sessions):
    """A storage restored in part, or a file removed by hand: the cell's image or thumbnail is a
    404 that says which file is missing (it was a bare 500), and the other cells still serve."""
    first, second = client.get(f"/api/cases/{processed_case}/cells", headers=auth).json()[:2]
    with sessions() as session:
        image, thumbnail = (session.get(Cell, first["id"]).image_path, session.get(Cell, second["id"]).thumbnail_path)
    (settings.storage_path / image).unlink()
    (settings.storage_path / thumbnail).unlink()
    r = client.get(f"/api/cells/{first['id']}/image", headers=auth)
    assert r.status_code == 404
    assert r.json()["detail"] == f"cell {first['id']}'s image is missing from the storage folder ({image})"
    r = client.get(f"/api/cells/{second['id']}/thumbnail", headers=auth)
    assert r.status_code == 404
    assert r.json()["detail"] == f"cell {second['id']}'s thumbnail is missing from the storage folder ({thumbnail})"
    assert client.get(f"/api/cells/{first['id']}/thumbnail", headers=auth).status_code == 200
    assert client.get(f"/api/cells/{second['id']}/image", headers=auth).status_code == 200


def test_the_gradcam_overlay_is_drawn_when_first_opened(client, auth, processed_case, settings, sessions):
    """The worker keeps the Grad-CAM map in the cell's row (no file); the first request draws the
    overlay, later requests serve that file. A cell processed by an earlier release (a heatmap PNG
    in the storage, no map in its row) is drawn from the PNG; one whose PNG is lost is a 404 that says so."""
    cells = client.get(f"/api/cases/{processed_case}/cells", headers=auth).json()
    with sessions() as session:
        first, second, third = (session.get(Cell, c["id"]) for c in cells[:3])
    overlay = settings.storage_path / first.overlay_path
    assert not overlay.exists() and not (settings.storage_path / Storage.heatmap_key(first.overlay_path)).exists()
    levels = np.asarray(first.gradcam["map"])
    x, y, side = first.gradcam["box"]
    assert levels.shape == (7, 7) and levels.max() == 255 and levels.min() >= 0
    assert 0 <= x and 0 <= y and x + side <= first.width and y + side <= first.height  # the framed crop
    r = client.get(f"/api/cells/{first.id}/gradcam", headers=auth)
    assert r.status_code == 200 and overlay.read_bytes() == r.content
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.format == "JPEG" and im.size == (first.width, first.height)
    assert client.get(f"/api/cells/{first.id}/gradcam", headers=auth).content == r.content

    # earlier releases: a grey heatmap PNG beside the overlay path, nothing in the row
    heat = np.zeros((60, 60), np.uint8)
    heat[20:40, 20:40] = 255
    legacy = settings.storage_path / Storage.heatmap_key(second.overlay_path)
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_bytes(encode.png(heat))
    with sessions() as session:
        session.execute(update(Cell).where(Cell.id.in_([second.id, third.id])).values(gradcam=None))
        session.commit()
    r = client.get(f"/api/cells/{second.id}/gradcam", headers=auth)
    assert r.status_code == 200 and (settings.storage_path / second.overlay_path).read_bytes() == r.content
    r = client.get(f"/api/cells/{third.id}/gradcam", headers=auth)
    assert r.status_code == 404 and "heatmap.png is missing" in r.json()["detail"]
    assert not (settings.storage_path / third.overlay_path).exists()


def test_an_upload_the_storage_cannot_take_is_refused_whole_naming_the_file(client, auth, settings, sessions,
                                                                           real_cells):
    """Storage that cannot be written (here its images folder is a file; a full disk reads the
    same) answers 507 with the file and the reason, and the case gets nothing of the upload."""
    from support.app import new_case, upload

    case_id = new_case(client, auth)
    settings.storage_path.mkdir(parents=True, exist_ok=True)
    (settings.storage_path / "images").write_text("not a folder")
    r = upload(client, auth, case_id, real_cells)
    assert r.status_code == 507
    assert r.json()["detail"].startswith(f"the server could not store {real_cells[0][0]}: Not a directory. "
                                         "Nothing from this upload was saved")
    case = client.get(f"/api/cases/{case_id}", headers=auth).json()
    assert (case["cells_total"], case["status"]) == (0, "empty")
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Upload)) == 0
    (settings.storage_path / "images").unlink()
    assert upload(client, auth, case_id, real_cells).status_code == 202  # the same files, once it is fixed


def test_thumbnails_the_storage_cannot_take_leave_the_cells_queued_for_the_retry(client, auth, settings, predictor,
                                                                                sessions, real_cells):
    """The worker cannot write a thumbnail: the task fails with StorageFailed (the Celery task
    retries it, worker.app), no cell is failed or lost, and the retry once the storage is
    fixed processes every cell."""
    from app.errors import StorageFailed
    from support.app import new_case, upload

    r = upload(client, auth, new_case(client, auth), real_cells).json()
    ids = [x["cell_id"] for x in r["accepted"]]
    (settings.storage_path / "thumbnails").write_text("not a folder")
    processor = Processor(settings, predictor)
    with pytest.raises(StorageFailed, match="could not write a thumbnail to the image storage .*: Not a directory"):
        processor.process(r["upload_id"], ids)
    with sessions() as session:
        assert set(session.scalars(select(Cell.status))) == {"pending"}
    (settings.storage_path / "thumbnails").unlink()
    assert processor.process(r["upload_id"], ids) == len(ids)
    with sessions() as session:
        assert set(session.scalars(select(Cell.status))) == {"done"}


def test_a_cell_whose_image_left_the_storage_fails_alone_with_the_reason(client, auth, settings, predictor,
                                                                         sessions, real_cells):
    from support.app import new_case, upload

    r = upload(client, auth, new_case(client, auth), real_cells).json()
    ids = [x["cell_id"] for x in r["accepted"]]
    with sessions() as session:
        gone = session.get(Cell, ids[2])
        Storage(settings.storage_path).path(gone.image_path).unlink()
    assert Processor(settings, predictor).process(r["upload_id"], ids) == len(ids)
    with sessions() as session:
        rows = {c.id: (c.status, c.error) for c in session.scalars(select(Cell))}
    assert rows.pop(ids[2]) == ("failed", "cannot read file: No such file or directory")
    assert set(rows.values()) == {("done", None)}


def test_ready_says_when_the_storage_cannot_take_a_file(client, settings):
    """A monitor polling /api/ready sees a storage outage before a technologist's upload does."""
    import shutil

    assert client.get("/api/ready").json() == {"status": "ready"}
    shutil.rmtree(settings.storage_path, ignore_errors=True)
    settings.storage_path.write_text("not a folder")  # a full or read-only disk reads the same
    r = client.get("/api/ready")
    assert r.status_code == 507
    assert r.json()["detail"] == f"the image storage {settings.storage_path.resolve()} cannot be written: File exists"
    settings.storage_path.unlink()
    assert client.get("/api/ready").json() == {"status": "ready"}


def test_the_ready_probe_writes_bytes_because_a_full_disk_still_creates_empty_files(tmp_path):
    """A full disk still creates an empty file, so the storage probe of /api/ready writes a cell
    image's worth. A file size limit (RLIMIT_FSIZE) refuses bytes as a full disk does and lets
    empty files through."""
    import resource
    import signal

    storage = Storage(tmp_path / "storage")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel stops the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        refused = storage.writable()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert refused == "File too large"
    assert storage.writable() is None
    assert list(storage.root.iterdir()) == []  # the probe leaves nothing behind


def test_a_full_database_says_so_instead_of_try_again(client, auth):
    """SQLite out of room (here its own page limit; a full disk answers the same SQLITE_FULL): a
    507 that sends the user to an administrator, not the 503 "try again in a moment" of a
    database that is restarting. Once there is room the same request works."""
    from sqlalchemy import event

    engine = client.app.state.engine

    def no_more_pages(dbapi_conn, _record) -> None:
        dbapi_conn.execute("VACUUM")  # no free pages left by the migrations' table rebuilds either
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    case = {"accession": "MD-FULL", "note": "x" * 10_000}  # needs pages the database does not have
    engine.dispose()
    event.listen(engine, "connect", no_more_pages)
    try:
        r = client.post("/api/cases", json=case, headers=auth)
    finally:
        event.remove(engine, "connect", no_more_pages)
        engine.dispose()
    assert r.status_code == 507
    assert r.json()["detail"] == "the database's disk is full; ask your administrator to free space, then try again"
    assert client.post("/api/cases", json=case, headers=auth).status_code == 201


def test_a_worker_that_sees_none_of_the_stored_images_fails_no_cell(client, auth, settings, predictor, sessions,
                                                                     real_cells, tmp_path):
    """A worker whose MARROW_STORAGE_DIR is not the web's (another machine's empty folder, a
    mount missing) finds none of a task's images: the task fails with StorageFailed naming the
    folder (the Celery task retries it, worker.app), and no cell is failed as unreadable; once
    the worker sees the web's storage, every cell is processed."""
    from app.errors import StorageFailed
    from support.app import new_case, upload

    r = upload(client, auth, new_case(client, auth), real_cells).json()
    ids = [x["cell_id"] for x in r["accepted"]]
    elsewhere = settings.model_copy(update={"storage_dir": tmp_path / "worker-local"})
    with pytest.raises(StorageFailed, match=rf"none of the {len(ids)} images of this task is in the image storage "
                                            rf".*worker-local \(the first: images/.*\): every web and worker must see "
                                            r"the same MARROW_STORAGE_DIR"):
        Processor(elsewhere, predictor).process(r["upload_id"], ids)
    with sessions() as session:
        assert set(session.scalars(select(Cell.status))) == {"pending"}
    assert Processor(settings, predictor).process(r["upload_id"], ids) == len(ids)
    with sessions() as session:
        assert set(session.scalars(select(Cell.status))) == {"done"}
