"""`marrow bench-app` on real cells: the whole app started, each round's upload timed between
two raw-model runs, the ratio the median of the rounds'.

Not a timed test: it checks the command's JSON (what the README's performance table quotes),
never a speed."""
from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import pytest

from app.cli import main, marrow_command

MARROW = marrow_command()


def test_bench_app_reports_every_round_and_their_median(real_cells_dir: Path, tmp_path: Path):
    out = tmp_path / "app.json"
    done = subprocess.run([*MARROW, "bench-app", "--cells", "6", "--rounds", "2", "--data-dir", str(real_cells_dir),
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    rounds = result["per_round"]
    assert result["rounds"] == len(rounds) == 2 and result["cells"] == 6
    assert result["pipeline_ratio"] == round(statistics.median(r["pipeline_ratio"] for r in rounds), 3)
    for r in rounds:
        assert r["cells_per_s"] > 0 and r["model_cells_per_s"] > 0
        assert r["pipeline_ratio"] == round(r["cells_per_s"] / r["model_cells_per_s"], 3)
        assert 0 < r["upload_answered_s"] <= r["seconds_to_processed"]
        assert all(r["cpu_ms_per_cell"][k] > 0 for k in ("model", "web", "worker"))
        assert all(0 <= share <= 1 for part in ("cpu_steal_share", "cpu_idle_share") for share in r[part].values()
                   if share is not None)
    assert all(result["cpu_ms_per_cell"][k] > 0 for k in ("model", "web", "worker"))  # medians over the rounds
    assert result["worker_backend"] == result["model_backend"]  # the app ran what the reference ran
    assert "round 2:" in done.stderr


def test_bench_app_needs_other_cells_for_every_round(real_cells_dir: Path):
    many = sum(1 for _ in real_cells_dir.rglob("*.jpg"))
    done = subprocess.run([*MARROW, "bench-app", "--cells", str(many), "--rounds", "2", "--data-dir",
                           str(real_cells_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "each round uploads other cells" in done.stderr and "Traceback" not in done.stderr


def test_bench_app_reads_progress_more_often_as_the_end_nears():
    from app.bench.endtoend import POLL_S, _next_poll

    assert _next_poll(0, 1000, 0.3) == 4 * POLL_S[0]  # nothing written yet
    assert _next_poll(100, 1000, 1.2) == POLL_S[1]  # about 11 s to go: the longest wait
    assert _next_poll(992, 1000, 11.5) == pytest.approx(8 * 11.5 / 992 / 2)  # the last 8: ~0.05 s
    assert _next_poll(999, 1000, 12.0) == POLL_S[0]  # never closer than the shortest wait


@pytest.mark.parametrize("option", [["--cells", "0"], ["--rounds", "0"]])
def test_bench_app_refuses_counts_below_one(option, capsys):
    assert main(["bench-app", *option]) == 2
    assert capsys.readouterr().err == "marrow bench-app: error: --cells and --rounds must be at least 1\n"


def test_bench_app_picks_each_image_once(real_cells_dir: Path, tmp_path: Path):
    """The app makes one cell of an image sent twice (the PBC set holds 4 such pairs), so the
    benches that count the cells the app made pick no copy; one that waited for a cell per file
    never ended."""
    from app.bench.cells import pick_cells

    originals = sorted(real_cells_dir.rglob("*.jpg"))[:3]
    for i, src in enumerate(originals):
        (tmp_path / "A").mkdir(exist_ok=True)
        (tmp_path / "A" / f"a{i}.jpg").write_bytes(src.read_bytes())
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "copy-of-a1.jpg").write_bytes(originals[1].read_bytes())
    (tmp_path / "B" / "b0.jpg").write_bytes(sorted(real_cells_dir.rglob("*.jpg"))[-1].read_bytes())

    assert len(pick_cells(tmp_path, 5)) == 5  # the other benches time files, copies or not
    picked = pick_cells(tmp_path, 4, distinct=True)
    assert sorted(p.name for p in picked) == ["a0.jpg", "a1.jpg", "a2.jpg", "b0.jpg"]
    with pytest.raises(ValueError, match="holds only 4 distinct images"):
        pick_cells(tmp_path, 5, distinct=True)
