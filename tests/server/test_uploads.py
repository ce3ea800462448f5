"""Uploads: every file checked, good ones stored by content hash, bad ones named with a reason,
zips opened safely, duplicates one cell, work enqueued on the real embedded broker."""
from __future__ import annotations

import struct
import unicodedata
import zlib

from sqlalchemy import func, select

from app.cells.models import Cell
from app.storage import sha256

from support.app import image_bytes, new_case, upload, wait_until_queued, zip_bytes
from support.app import queued_tasks as broker_tasks


def queued_tasks(settings) -> int:
    return broker_tasks(settings.data_dir / "broker.sqlite")


def test_upload_images_and_zips(client, auth, settings, sessions):
    case_id = new_case(client, auth)
    a, b, c, d = (image_bytes(i) for i in range(4))
    archive = zip_bytes({"cells/c.png": c, "../../escape.png": d, "inner.zip": zip_bytes({"x.png": a}),
                         "notes.txt": b"hello", "__MACOSX/._c.png": b"junk", "dir/": b""})
    r = upload(client, auth, case_id, [("a.png", a), ("b.jpg", image_bytes(1, "JPEG")), ("a-again.png", a),
                                       ("broken.png", a[:60]), ("readme.txt", b"not an image"),
                                       ("batch.zip", archive), ("empty.png", b"")])
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"upload_id", "accepted", "rejected"}
    rejected = {x["file"]: x["reason"] for x in body["rejected"]}
    assert rejected == {"broken.png": "truncated", "readme.txt": "not an image",
                        "batch.zip/inner.zip": "nested archive (zip inside a zip)",
                        "batch.zip/notes.txt": "not an image", "empty.png": "empty file"}
    accepted = {x["file"]: x for x in body["accepted"]}
    assert set(accepted) == {"a.png", "b.jpg", "a-again.png", "batch.zip/cells/c.png", "batch.zip/../../escape.png"}
    assert accepted["a-again.png"]["duplicate"] and accepted["a-again.png"]["cell_id"] == accepted["a.png"]["cell_id"]

    with sessions() as session:
        cells = session.scalars(select(Cell).where(Cell.case_id == case_id)).all()
    assert len(cells) == 4  # a, b, c, d
    storage = settings.storage_path
    for cell in cells:
        path = storage / cell.image_path
        assert path.is_file() and sha256(path.read_bytes()) == cell.sha256 == path.name
    written = {p.relative_to(settings.data_dir).parts[0] for p in settings.data_dir.rglob("*") if p.is_file()}
    assert written <= {"storage", "marrow.sqlite", "marrow.sqlite-wal", "marrow.sqlite-shm", "broker.sqlite"}
    assert not any("escape" in p.name for p in settings.data_dir.parent.rglob("*"))
    assert queued_tasks(settings) == 2  # 4 new cells, 3 per task

    # The same images again: the same cells, nothing new enqueued.
    r = upload(client, auth, case_id, [("a.png", a), ("c.png", c)])
    assert [x["duplicate"] for x in r.json()["accepted"]] == [True, True]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Cell)) == 4
    assert queued_tasks(settings) == 2
    status = client.get(f"/api/uploads/{r.json()['upload_id']}", headers=auth).json()
    assert status["status"] == "done" and status["cells_total"] == 0

    case = client.get(f"/api/cases/{case_id}", headers=auth).json()
    assert (case["status"], case["cells_total"], case["cells_processed"]) == ("processing", 4, 0)
    audit = client.get(f"/api/cases/{case_id}/audit", headers=auth).json()
    assert [e["action"] for e in audit] == ["upload", "upload"] and audit[0]["user"] == "rita"


def test_upload_limits(client, auth, settings):
    case_id = new_case(client, auth)
    big = b"\x89PNG" + bytes(2 * 1024 * 1024)  # over max_file_mb=1
    bomb = zip_bytes({"bomb.png": bytes(50 * 1024 * 1024)})  # 50 MiB of zeros, ~50 KiB zipped
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    huge = b"\x89PNG\r\n\x1a\n" + b"".join(  # a header promising 2.5 gigapixels
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in ((b"IHDR", ihdr), (b"IDAT", zlib.compress(b"\0" * 64)), (b"IEND", b"")))
    r = upload(client, auth, case_id, [("big.png", big), ("bomb.zip", bomb), ("huge.png", huge),
                                       ("ok.png", image_bytes(9))])
    assert r.status_code == 202
    reasons = {x["file"]: x["reason"] for x in r.json()["rejected"]}
    assert reasons["big.png"].startswith("too large") and reasons["bomb.zip/bomb.png"].startswith("too large")
    assert reasons["huge.png"] == "too large: 50000×50000"
    assert [x["file"] for x in r.json()["accepted"]] == ["ok.png"]

    r = client.post(f"/api/cases/{case_id}/uploads", headers={**auth, "Content-Length": str(9 * 1024 * 1024)},
                    content=b"x")
    assert r.status_code == 413
    assert upload(client, auth, 999, [("ok.png", image_bytes(9))]).status_code == 404
    assert client.post(f"/api/cases/{case_id}/uploads", headers=auth, data={"x": "1"}).status_code == 422


def test_an_upload_the_temporary_folder_cannot_take_is_refused_whole_saying_where(client, auth, tmp_path,
                                                                                  monkeypatch):
    """Parts over 1 MiB are spooled to the temporary folder while the request arrives; when it
    cannot take them (full: measured on a 1 MiB tmpfs as TMPDIR; here a file where the folder
    should be) the upload is a 507 naming the folder, not a bare 500, and the case gets nothing."""
    import tempfile

    case_id = new_case(client, auth)
    blocked = tmp_path / "tmp"
    blocked.write_text("not a folder")
    monkeypatch.setattr(tempfile, "tempdir", str(blocked))
    r = upload(client, auth, case_id, [("ok.png", image_bytes(1)), ("big.png", b"\x89PNG" + bytes(1536 * 1024))])
    assert r.status_code == 507
    assert r.json()["detail"].startswith(f"the server could not receive this upload: its temporary folder {blocked} "
                                         f"cannot take it (Not a directory). Nothing from this upload was saved")
    monkeypatch.undo()
    assert client.get(f"/api/cases/{case_id}", headers=auth).json()["cells_total"] == 0
    assert upload(client, auth, case_id, [("ok.png", image_bytes(1))]).status_code == 202


def test_cells_the_broker_refused_are_queued_once_it_takes_them(client, auth, settings, tmp_path, monkeypatch):
    """Only the web lost the broker (here its SQLite file's folder is not there yet): the upload
    is answered and saved, and its cells are queued as soon as the broker takes them, with no
    worker reconnecting to requeue them."""
    import time

    from app import queue

    monkeypatch.setattr(queue, "RETRY_S", (0.2, 0.4))
    case_id = new_case(client, auth)
    folder = tmp_path / "broker-not-mounted"
    monkeypatch.setattr(settings, "broker_url", f"sqla+sqlite:///{folder}/broker.sqlite")
    r = upload(client, auth, case_id, [("a.png", image_bytes(1)), ("b.png", image_bytes(2))])
    assert r.status_code == 202 and len(r.json()["accepted"]) == 2
    time.sleep(1)
    assert not folder.exists()
    folder.mkdir()
    wait_until_queued(folder / "broker.sqlite", 1)  # 2 cells, 3 a task


def test_unicode_and_control_characters_in_names(client, auth, settings):
    case_id = new_case(client, auth)
    r = upload(client, auth, case_id,
               [("zelle\u0007_ä\u202e.png", image_bytes(3)), ("C:\\scans\\x.png", image_bytes(4))])
    names = sorted(x["file"] for x in r.json()["accepted"])
    assert names[0] == "x.png" and "ä" in names[1]  # a Windows path keeps only its last part
    assert not any(unicodedata.category(ch).startswith("C") for name in names for ch in name)


def test_images_are_served_by_id_as_png_or_jpeg(client, auth):
    case_id = new_case(client, auth)
    r = upload(client, auth, case_id, [("scan.tif", image_bytes(5, "TIFF")), ("crop.jpg", image_bytes(6, "JPEG"))])
    ids = {x["file"]: x["cell_id"] for x in r.json()["accepted"]}
    tiff = client.get(f"/api/cells/{ids['scan.tif']}/image", headers=auth)
    jpeg = client.get(f"/api/cells/{ids['crop.jpg']}/image", headers=auth)
    assert tiff.headers["content-type"] == "image/png" and tiff.content.startswith(b"\x89PNG")
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content == image_bytes(6, "JPEG")
    assert client.get(f"/api/cells/{ids['crop.jpg']}/thumbnail", headers=auth).status_code == 404  # not yet
    assert client.get("/api/cells/99999/image", headers=auth).status_code == 404


def test_an_image_sent_as_png_has_its_own_etag(client, auth):
    case_id = new_case(client, auth)
    tiff = image_bytes(7, "TIFF")
    cell_id = upload(client, auth, case_id, [("scan.tif", tiff)]).json()["accepted"][0]["cell_id"]
    first = client.get(f"/api/cells/{cell_id}/image", headers=auth)
    assert first.headers["etag"] == f'"{sha256(tiff)}.png"'
    again = client.get(f"/api/cells/{cell_id}/image", headers={**auth, "If-None-Match": f'W/{first.headers["etag"]}'})
    assert (again.status_code, again.content) == (304, b"")
