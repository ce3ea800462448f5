"""Issue 13 end to end in headless Chromium against `marrow run` with the shipped model: an
upload with cells the pipeline will not name (uniform grey and grayscale images: not stained
cells), sign-off refused naming how many, the reviewer classifies them with keys (one as a
plasma cell), signs, downloads the PDF (text checked) and the FHIR bundle (validated)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import PROCESS_TIMEOUT_MS, open_new_case

N_REAL = 8


def _not_stained(tmp_path: Path, real: Path) -> list[Path]:
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((96, 96, 3), 150, np.uint8)).save(grey)
    photo = tmp_path / "grayscale.png"
    Image.open(real).convert("L").convert("RGB").save(photo)
    return [grey, photo]


def test_unidentified_cells_block_sign_off_until_classified(server, browser, artifacts, real_cells_dir, tmp_path):
    from fhir.resources.R4B.bundle import Bundle
    from pypdf import PdfReader

    from app.bench.cells import pick_cells

    cells = pick_cells(real_cells_dir, N_REAL)
    odd = _not_stained(tmp_path, cells[0])
    context = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    case_url = open_new_case(page, server, "E2E-UNK")
    page.set_input_files("#files", [*cells, *odd])
    page.click("#upload-form button:has-text('Upload')")
    page.wait_for_selector("#progress[data-state=done]", timeout=PROCESS_TIMEOUT_MS)
    page.wait_for_selector("#case-head .status:has-text('ready')")

    # The unidentified cells come first in the review, and in no percentage.
    page.click("a:has-text('Review cells')")
    page.wait_for_selector("#gallery .tile")
    assert page.locator("#gallery .group").first.get_attribute("data-code") == "UNK"
    unk = page.locator("#group-UNK .tile")
    n_unk = unk.count()
    assert n_unk >= len(odd)
    assert page.locator("#differential tr[data-code=UNK] .count").inner_text() == str(n_unk)
    page.screenshot(path=artifacts / "unidentified.png")

    # Sign-off refused, naming how many.
    page.goto(case_url)
    page.click("button:has-text('Sign off')")
    page.wait_for_selector(f".msg.error:has-text('{n_unk} unidentified cell')")

    # Classify them with the keys: the first as a plasma cell, the rest as lymphocytes.
    page.goto(case_url + "/review")
    page.wait_for_selector("#group-UNK .tile")
    plm_key = page.locator(".keys [data-label=PLM]").get_attribute("data-key")
    lyt_key = page.locator(".keys [data-label=LYT]").get_attribute("data-key")
    ids = [unk.nth(i).get_attribute("data-id") for i in range(n_unk)]
    for i, cell_id in enumerate(ids):
        page.locator(f"#cell-{cell_id}").click()
        page.keyboard.press(plm_key if i == 0 else lyt_key)
        page.wait_for_selector(f"#group-{'PLM' if i == 0 else 'LYT'} #cell-{cell_id}")
    assert page.locator("#group-UNK .tile").count() == 0
    assert page.locator("#differential tr[data-code=UNK] .count").inner_text() == "0"
    assert page.locator("#differential tr[data-code=PLM] .count").inner_text() == "1"
    assert page.locator("#indices [data-index=me_ratio]").count() == 1

    page.goto(case_url)
    page.click("button:has-text('Sign off')")
    page.wait_for_selector("#signed")

    with page.expect_download() as download:
        page.click("a:has-text('PDF report')")
    pdf = Path(download.value.path()).read_bytes()
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    for expected in ("E2E-UNK", "bone marrow", "Signed by", "ada at", "Plasma cell", "M:E ratio", "95 % CI",
                     "rexnet150", "Blasts"):
        assert expected in text, (expected, text[:2000])
    with page.expect_download() as download:
        page.click("a:has-text('FHIR bundle')")
    bundle = Bundle.model_validate_json(Path(download.value.path()).read_bytes())
    report = next(e.resource for e in bundle.entry if e.resource.get_resource_type() == "DiagnosticReport")
    assert report.status == "final"
    plm = next(e.resource for e in bundle.entry if e.resource.get_resource_type() == "Observation"
               and e.resource.code.coding[-1].code == "PLM")
    assert plm.component[0].valueInteger == 1
    context.close()
