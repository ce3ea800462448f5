"""Hostile input against real `marrow web` + `marrow worker` processes: every bad file is named
with a reason, every good file in the same batch is processed, nothing lands outside the
storage directory, both processes keep serving, and the web process's memory stays bounded."""
from __future__ import annotations

import threading
import unicodedata
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import psutil

from app.bench.cells import pick_cells

from .corpus import ACCEPTED, MiB, hostile_files, image, zeros_zip

MAX_FILE_MB = 32  # the product's default
# Headroom over the web process's resting size while it checks one upload. The 20 MB image is
# decoded in full (about 60 MB of pixels); an upload is checked a bounded number of bytes at a
# time, so neither it nor a zip that inflates to 1 GiB may cost more than this.
WEB_GROWTH_LIMIT_MB = 400
WORKER_RSS_LIMIT_MB = 2000


@contextmanager
def peak_rss(pid: int):
    """Samples a process's RSS every 20 ms; yields a dict filled with base/peak MB."""
    proc, out, stop = psutil.Process(pid), {}, threading.Event()
    out["base"] = out["peak"] = proc.memory_info().rss / MiB

    def sample() -> None:
        while not stop.wait(0.02):
            out["peak"] = max(out["peak"], proc.memory_info().rss / MiB)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out["growth"] = out["peak"] - out["base"]


def shown(name: str) -> str:
    """How a file name is listed: its last path component, control characters removed."""
    base = PurePosixPath(name).name
    return unicodedata.normalize("NFC", "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")).strip()


def tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_hostile_corpus(stack, real_cells_dir, tmp_path, capsys):
    good = [(p.name, p.read_bytes()) for p in pick_cells(real_cells_dir, 10)]
    corpus = hostile_files(good, MAX_FILE_MB)
    before = tree(tmp_path)
    web = stack.start_web()
    [worker] = stack.start_workers("worker")
    with stack.api() as api:
        case_id = api.post("/api/cases", json={"accession": "HOSTILE-1"}).json()["id"]
        with peak_rss(web.proc.pid) as corpus_mem:
            r = api.post(f"/api/cases/{case_id}/uploads",
                         files=[("files", (name, data, "application/octet-stream")) for name, data, _ in corpus])
        assert r.status_code == 202, r.text
        body = r.json()
        rejected = {x["file"]: x["reason"] for x in body["rejected"]}
        accepted = {x["file"] for x in body["accepted"]}
        for name, _, reason in corpus:
            label = shown(name)
            if name.endswith(".zip"):  # judged by its members
                members = {f: why for f, why in rejected.items() if f.startswith(label + "/")}
                if reason is ACCEPTED:
                    assert any(f.startswith(label + "/") for f in accepted), (name, body)
                else:
                    assert any(reason in why for why in members.values()), (name, reason, members)
            elif reason is ACCEPTED:
                assert label in accepted, (name, label, body)
            else:
                assert reason in rejected.get(label, ""), (name, reason, rejected)
        assert all(why and f for f, why in rejected.items())
        assert {f"paths.zip/{m}" for m in ("../../evil-up.png", "/abs/evil-abs.png", "ok/inner.png")} <= accepted
        assert not any(unicodedata.category(ch)[0] == "C" for f in accepted | set(rejected) for ch in f)

        # A zip of 34 members, each 30 MiB of zeros under the per-file limit (~1 GiB inflated).
        with peak_rss(web.proc.pid) as bomb_mem:
            r = api.post(f"/api/cases/{case_id}/uploads", files=[("files", ("zeros.zip", zeros_zip(34, 30)))])
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == [] and len(r.json()["rejected"]) == 34
        assert all(x["file"].startswith("zeros.zip/zeros-") for x in r.json()["rejected"])

        # Requests that are wrong as a whole: refused with a message, and nothing changes.
        for files, data in (([], {"note": "no files"}), ([("other", ("a.png", good[0][1]))], {})):
            r = api.post(f"/api/cases/{case_id}/uploads", files=files or None, data=data)
            assert r.status_code == 422 and "no files" in r.json()["detail"], r.text
        bad_json = [("POST", "/api/cases", {"accession": 12}), ("POST", "/api/cases", {"accession": None}),
                    ("POST", "/api/cases", ["MD-1"]), ("POST", "/api/cases", {})]
        for method, url, payload in bad_json:
            r = api.request(method, url, json=payload)
            assert r.status_code == 422 and r.json()["detail"], (payload, r.text)
        assert api.post("/api/cases", content=b"{not json", headers={"Content-Type": "application/json"}
                        ).status_code == 422

        total = len({x["cell_id"] for x in body["accepted"]})
        case = stack.wait_processed(case_id, total)
        report = api.get(f"/api/uploads/{body['upload_id']}").json()  # the upload's report, later
        assert report["rejected"] == body["rejected"] and report["accepted"] == len(body["accepted"])
        assert (report["status"], report["cells_done"]) == ("done", total)
        cells = api.get(f"/api/cases/{case_id}/cells").json()
        assert len(cells) == total and all(c["status"] == "done" and c["predicted"] for c in cells), cells
        assert "grayscale" in next(c for c in cells if c["filename"] == "gray.png")["quality_flags"]
        assert sum(case["counts"].values()) == total
        cell = cells[0]["id"]
        for payload in ({"label": 5}, {"label": "ZZZ"}, {"label": "bla"}, {"label": "BLA", "version": "x"}, {}):
            r = api.patch(f"/api/cells/{cell}", json=payload)
            assert r.status_code == 422, (payload, r.text)
        assert "unknown category 'ZZZ'" in api.patch(f"/api/cells/{cell}", json={"label": "ZZZ"}).json()["detail"]
        assert api.get(f"/api/cases/{case_id}/audit").json()[-1]["action"] == "upload"  # no label was written

        # Both processes still serve: a good upload after all that is processed.
        r = api.post(f"/api/cases/{case_id}/uploads", files=[("files", ("late.jpg", image(99, "JPEG")))])
        assert r.status_code == 202 and api.get("/api/health").status_code == 200
    assert web.alive() and worker.alive(), stack.logs()

    written = tree(tmp_path) - before
    outside = [p for p in written if p.suffix != ".log" and not p.is_relative_to(stack.data_dir / "storage")
               and p.parent != stack.data_dir]
    assert outside == [], outside
    assert not any("evil" in p.name for p in written)
    assert not Path("/abs/evil-abs.png").exists() and not Path("/evil-up.png").exists()

    worker_mb = psutil.Process(worker.proc.pid).memory_info().rss / MiB
    with capsys.disabled():
        print(f"\nweb RSS: {corpus_mem['base']:.0f} MB at rest, +{corpus_mem['growth']:.0f} MB peak during the "
              f"corpus upload, +{bomb_mem['growth']:.0f} MB during the 1 GiB zip; worker RSS {worker_mb:.0f} MB")
    assert corpus_mem["growth"] < WEB_GROWTH_LIMIT_MB, corpus_mem
    assert bomb_mem["growth"] < WEB_GROWTH_LIMIT_MB, bomb_mem
    assert worker_mb < WORKER_RSS_LIMIT_MB
