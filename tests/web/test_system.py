"""The administrators' System page: workers alive or silent, the cells waiting, the storage,
the model and the schema."""
from __future__ import annotations

import os
import re
import time

from app.processing.runtime import write_report
from support.app import image_bytes, make_user, new_case, upload

from .conftest import log_in


def test_system_page_for_administrators(client, auth, sessions, settings, predictor):
    make_user(sessions, "ada", "admin")
    log_in(client, "rita")
    assert client.get("/admin/system").status_code == 403  # a reviewer
    log_in(client, "ada")
    html = client.get("/admin/system").text
    assert 'id="no-live-worker"' in html and "No cell is waiting." in html
    assert "schema 0007" in html and "it-random (7 classes)" in html and "sqlite" in html
    assert re.search(r"GB free of [\d.]+ GB", html)

    case_id = new_case(client, auth, "BM-S")
    assert upload(client, auth, case_id, [(f"{i}.png", image_bytes(i)) for i in range(3)]).status_code == 202
    stale = write_report(settings, predictor.describe())
    os.utime(stale, (time.time() - 600,) * 2)  # a worker killed ten minutes ago
    html = client.get("/admin/system").text
    assert "<b>3</b> cells of 1 upload waiting" in html
    assert 'id="no-live-worker"' in html and "<b>silent</b>" in html
    os.utime(stale)  # it touches its report again
    html = client.get("/admin/system").text
    assert 'id="no-live-worker"' not in html and "<td>running</td>" in html
    assert f"{predictor.backend}" in html and "passed: top-1 agreement" in html
    units = " ".join(predictor.describe()["cpu_flags"]) or "—"  # the units its backend was chosen by
    assert f'<td class="cpu-units"><small>{units}</small></td>' in html
    assert 'href="/admin/system"' in client.get("/cases").text


def test_system_page_says_which_scripts_the_pdf_report_can_print(client, sessions, monkeypatch, tmp_path):
    """An administrator whose reports show <U+...> learns here which Debian package is missing."""
    from app.reports import fonts

    make_user(sessions, "ada", "admin")
    log_in(client, "ada")
    if fonts.cjk_file() and fonts.noto_fonts():
        row = client.get("/admin/system").text.split('id="report-fonts"')[1].split("</tr>")[0]
        assert "wqy-microhei.ttc" in row or "wqy-zenhei.ttc" in row, row
        assert re.search(r"\d+ Noto fonts in <code>/usr/share/fonts/truetype/noto</code>", row), row
        assert "not installed" not in row
    monkeypatch.setattr(fonts, "CJK_FONTS", (tmp_path / "absent.ttc",))
    monkeypatch.setattr(fonts, "NOTO_DIR", tmp_path / "absent")
    row = client.get("/admin/system").text.split('id="report-fonts"')[1].split("</tr>")[0]
    assert row.count("not installed") == 2 and "<code>fonts-wqy-microhei</code>" in row and "<code>fonts-noto-core</code>" in row, row


def test_system_page_says_whether_the_packages_are_the_tested_versions(client, sessions, monkeypatch, tmp_path):
    """A package upgraded outside scripts/run.sh (or one constraints.txt does not know) is named
    with the version that was tested; a constraints.txt that cannot be read is said so."""
    import importlib.metadata

    from app import package_versions

    make_user(sessions, "ada", "admin")
    log_in(client, "ada")
    installed = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
    constraints = tmp_path / "constraints.txt"
    monkeypatch.setattr(package_versions, "CONSTRAINTS", constraints)

    def row() -> str:
        return client.get("/admin/system").text.split('id="package-versions"')[1].split("</tr>")[0]

    pins = {name: version for name, version in installed.items() if name.lower() not in ("marrowdiff", "pip")}
    constraints.write_text("# tested\n" + "".join(f"{n}=={v}\n" for n, v in pins.items()))
    assert "the versions MarrowDiff was tested with" in row() and "<ul>" not in row()

    pins["fastapi"] = "0.115.0"
    del pins["Jinja2" if "Jinja2" in pins else "jinja2"]
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
    text = row()
    assert "<b>2 not the versions MarrowDiff was tested with</b>" in text, text
    assert f"<code>fastapi</code> {installed['fastapi']}, tested 0.115.0" in text, text
    assert re.search(r"<code>jinja2</code> [\d.]+, not among the tested packages", text), text

    constraints.unlink()
    assert "<b>cannot tell</b>" in row() and "No such file or directory" in row()
