"""The lab's categories, unidentified cells, the computed differential and its exports
(issue 13's contract), through the real app on SQLite."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.taxonomy.defaults import DEFAULT_CATEGORIES

from support.app import make_user, new_case
from .differential_helpers import labelled_case

ICSH = ["BLA", "PMO", "MYB", "MMZ", "NGB", "NGS", "EOS", "BAS", "MON", "LYT", "PLM", "EBO"]


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


def test_taxonomy_is_the_icsh_list_plus_not_counted_ones(client, auth):
    r = client.get("/api/taxonomy", headers=auth)
    assert r.status_code == 200
    cats = r.json()
    assert [c["code"] for c in cats][:12] == ICSH
    assert {"NIF", "PLT", "ART", "OTH"} <= {c["code"] for c in cats}
    assert all({"code", "name", "key", "counted", "lineage", "predicted_by_model"} <= set(c) for c in cats)
    by = {c["code"]: c for c in cats}
    # the test model is the seven-class one
    assert by["BLA"]["predicted_by_model"] and by["NIF"]["predicted_by_model"]
    assert not by["PLM"]["predicted_by_model"] and not by["EBO"]["predicted_by_model"]
    assert not by["NIF"]["counted"] and not by["PLT"]["counted"] and not by["ART"]["counted"]
    assert by["EBO"]["lineage"] == "erythroid" and by["MON"]["lineage"] == "monocytic"
    assert {c["lineage"] for c in cats if c["code"] in ICSH[:8]} == {"myeloid"}
    assert len({c["key"] for c in cats}) == len(cats)
    assert client.get("/api/taxonomy").status_code == 401


def test_admin_edits_the_list_validated_and_cases_keep_theirs(client, auth, sessions):
    old_case = new_case(client, auth, "OLD")
    admin = {"Authorization": f"Bearer {make_user(sessions, 'ada', 'admin')[1]}"}
    body = [c.as_dict() for c in DEFAULT_CATEGORIES] + [
        {"code": "MAS", "name": "Mast cell", "key": "w", "counted": True, "lineage": "other"}]
    assert client.put("/api/taxonomy", json=body, headers=auth).status_code == 403  # a reviewer
    dup = body[:-1] + [{"code": "BLA", "name": "again", "key": "b", "counted": True, "lineage": ""}]
    r = client.put("/api/taxonomy", json=dup, headers=admin)
    assert r.status_code == 422
    assert "code BLA repeats row 1" in r.json()["detail"] and "key 'b' repeats row 1" in r.json()["detail"]
    r = client.put("/api/taxonomy", json=body[:-1] + [{**body[-1], "key": "z"}], headers=admin)
    assert r.status_code == 422 and "reserved" in r.json()["detail"]
    r = client.put("/api/taxonomy", json=body, headers=admin)
    assert r.status_code == 200 and r.json()[-1]["code"] == "MAS"
    assert client.get("/api/taxonomy", headers=auth).json()[-1]["code"] == "MAS"

    new = new_case(client, auth, "NEW")
    assert "MAS" in client.get(f"/api/cases/{new}", headers=auth).json()["counts"]
    assert "MAS" not in client.get(f"/api/cases/{old_case}", headers=auth).json()["counts"]


def test_counts_indices_and_relabel_to_any_category_of_the_case(client, auth, sessions):
    case_id, ids = labelled_case(client, auth, sessions, ["BLA", "NGS", "NGS", "EBO", "UNK", "NIF"])
    case = client.get(f"/api/cases/{case_id}", headers=auth).json()
    assert list(case["counts"])[0] == "UNK" and case["counts"]["UNK"] == 1
    assert set(ICSH) <= set(case["counts"])
    ind = case["indices"]
    assert ind["counted_total"] == 4  # BLA, 2 NGS, EBO: UNK and NIF are in no denominator
    assert ind["blast_percent"] == pytest.approx(25.0)
    assert ind["me_ratio"] == pytest.approx(3.0)  # (BLA + 2 NGS) / EBO
    assert "UNK" not in case["differential"] and "NIF" not in case["differential"]
    assert sum(case["differential"].values()) == pytest.approx(100.0, abs=0.05)
    low, high = case["intervals"]["BLA"]
    assert low < 25.0 < high

    cells = {c["id"]: c for c in client.get(f"/api/cases/{case_id}/cells", headers=auth).json()}
    unk = cells[ids[4]]
    assert (unk["label"], unk["predicted"], unk["unidentified"]) == ("UNK", "BLA", "low confidence")
    assert unk["top3"][0]["code"] == "BLA"

    r = client.patch(f"/api/cells/{ids[4]}", json={"label": "PLM"}, headers=auth)
    assert r.status_code == 200 and r.json()["label"] == "PLM"
    r = client.patch(f"/api/cells/{ids[0]}", json={"label": "XYZ"}, headers=auth)
    assert r.status_code == 422 and "XYZ" in r.json()["detail"]
    case = client.get(f"/api/cases/{case_id}", headers=auth).json()
    assert case["counts"]["UNK"] == 0 and case["counts"]["PLM"] == 1 and case["indices"]["counted_total"] == 5


def test_sign_off_refused_while_unidentified_cells_remain(client, auth, sessions):
    case_id, ids = labelled_case(client, auth, sessions, ["UNK", "UNK", "UNK", "LYT"])
    r = client.post(f"/api/cases/{case_id}/sign", headers=auth)
    assert r.status_code == 409 and "3 unidentified cells" in r.json()["detail"]
    for cell_id in ids[:2]:
        assert client.patch(f"/api/cells/{cell_id}", json={"label": "LYT"}, headers=auth).status_code == 200
    r = client.post(f"/api/cases/{case_id}/sign", headers=auth)
    assert r.status_code == 409 and "1 unidentified cell remains" in r.json()["detail"]
    client.patch(f"/api/cells/{ids[2]}", json={"label": "PLM"}, headers=auth)
    r = client.post(f"/api/cases/{case_id}/sign", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "signed"


def test_differential_csv_has_intervals_and_ratio_rows(client, auth, sessions):
    labels = ["BLA"] * 10 + ["NGS"] * 140 + ["EBO"] * 50 + ["UNK"] * 2 + ["NIF"] * 3
    case_id, _ = labelled_case(client, auth, sessions, labels)
    r = client.get(f"/api/cases/{case_id}/differential.csv", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = _rows(r.text)
    assert {"ci_low", "ci_high"} <= set(rows[0])
    by = {row["class_code"]: row for row in rows}
    assert rows[0]["class_code"] == "UNK" and by["UNK"]["reviewed_count"] == "2" and by["UNK"]["percent"] == ""
    # 10 of 200: 5.00 %, exact 95 % interval 2.42-9.00 % (Rümke's table: 2.4-9.0)
    assert (by["BLA"]["percent"], by["BLA"]["ci_low"], by["BLA"]["ci_high"]) == ("5.00", "2.42", "9.00")
    assert by["NIF"]["percent"] == "" and by["NIF"]["ci_low"] == ""
    assert by["me_ratio"]["ratio"] == "3.000"  # (10 + 140) / 50
    assert float(by["me_ratio"]["ci_low"]) < 3.0 < float(by["me_ratio"]["ci_high"])
    assert by["blast_percent"]["percent"] == "5.00" and by["erythroid_percent"]["percent"] == "25.00"


def test_report_pdf_and_fhir_bundle(client, auth, sessions):
    from fhir.resources.R4B.bundle import Bundle
    from pypdf import PdfReader

    case_id, ids = labelled_case(client, auth, sessions, ["BLA"] * 3 + ["NGS"] * 5 + ["EBO"] * 2, "MD-PDF")
    for path in (f"/api/cases/{case_id}/report.pdf", f"/api/cases/{case_id}/fhir"):
        assert client.get(path).status_code == 401
    assert client.post(f"/api/cases/{case_id}/sign", headers=auth).status_code == 200

    r = client.get(f"/api/cases/{case_id}/report.pdf", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(r.content)).pages)
    for expected in ("MD-PDF", "bone marrow", "Signed by", "rita", "M:E ratio: 4.00", "Blasts: 30.0 %",
                     "95 % CI", "it-random", "marks 5 % / 20 %", "at or above 20 %"):
        assert expected in text, (expected, text)

    r = client.get(f"/api/cases/{case_id}/fhir", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/fhir+json"
    bundle = Bundle.model_validate_json(r.content)  # validated by the FHIR library
    resources = [e.resource for e in bundle.entry]
    report = next(x for x in resources if x.get_resource_type() == "DiagnosticReport")
    observations = [x for x in resources if x.get_resource_type() == "Observation"]
    assert report.status == "final" and len(report.result) == len(observations)
    case = client.get(f"/api/cases/{case_id}", headers=auth).json()
    assert len(observations) == len(case["categories"]) + 6  # one per category and per index
    me = next(o for o in observations if any(c.code == "me_ratio" for c in o.code.coding))
    assert float(me.valueQuantity.value) == pytest.approx(4.0)
    assert any(c.system == "http://loinc.org" and c.code == "11138-5" for c in me.code.coding)
    raw = json.loads(r.content)
    assert raw["resourceType"] == "Bundle" and raw["type"] == "collection"


def test_every_pdf_page_names_the_case_its_state_and_page_of_pages(client, auth, sessions):
    """A printed page that strays from the chart names its case; "page N of M" shows one missing."""
    from pypdf import PdfReader

    case_id, _ = labelled_case(client, auth, sessions, ["BLA"] * 3 + ["NGS"] * 5, "MD-FOOT")

    def pages() -> list[str]:
        r = client.get(f"/api/cases/{case_id}/report.pdf", headers=auth)
        return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(r.content)).pages]

    assert pages()[-1].endswith(f"MarrowDiff · MD-FOOT (case {case_id}) · PRELIMINARY, not signed · page 1 of 1")
    comment = "Hypercellular marrow with trilineage haematopoiesis. " * 70  # about 3,800 characters
    assert client.post(f"/api/cases/{case_id}/sign", json={"comment": comment}, headers=auth).status_code == 200
    signed = pages()
    assert len(signed) >= 2
    for n, text in enumerate(signed, 1):
        assert text.endswith(f"MarrowDiff · MD-FOOT (case {case_id}) · signed · page {n} of {len(signed)}"), text[-120:]


def _pdf(client, auth, case_id: int) -> tuple[str, set[str]]:
    """The case's PDF report: its text, and the names of the fonts it embeds."""
    from pypdf import PdfReader

    r = client.get(f"/api/cases/{case_id}/report.pdf", headers=auth)
    assert r.status_code == 200, r.text
    pages = PdfReader(io.BytesIO(r.content)).pages
    fonts = {str(font["/BaseFont"]).split("+")[-1] for page in pages for font in page["/Resources"]["/Font"].values()}
    return " ".join(page.extract_text() for page in pages), fonts


def test_report_pdf_prints_identifiers_in_other_scripts_as_typed(client, auth, sessions):
    """An accession is a patient identifier: Latin, Greek and Cyrillic letters print as typed (the
    Latin-1 core fonts printed "?" for Ł, Ω, Ж), and a character no font has a glyph for prints
    as its code point rather than as something else."""
    case_id, _ = labelled_case(client, auth, sessions, ["BLA", "NGS"], "Łódź-Ωμέγα-Жук-\U0001FA787")
    text, _ = _pdf(client, auth, case_id)
    assert "Łódź-Ωμέγα-Жук-<U+1FA78>7" in text, text[:500]
    assert "Rümke" in text, text
    case_id, _ = labelled_case(client, auth, sessions, ["BLA", "NGS"], "MD-LATIN")
    fonts = _pdf(client, auth, case_id)[1]
    assert fonts and all(name.startswith("DejaVuSans") for name in fonts), fonts  # no CJK font where none is needed


def test_report_pdf_prints_chinese_japanese_and_korean_with_the_cjk_font(client, auth, sessions):
    from app.reports.fonts import CJK_FONTS

    if not any(path.is_file() for path in CJK_FONTS):
        pytest.skip("no CJK font: install Debian's fonts-wqy-microhei (scripts/test.sh does)")
    case_id, _ = labelled_case(client, auth, sessions, ["BLA", "NGS"], "骨髓-漢7")
    comment = "原始细胞增多，建议流式细胞术。芽球が増加。 모세포 증가 " * 8  # long enough to wrap
    assert client.post(f"/api/cases/{case_id}/sign", json={"comment": comment}, headers=auth).status_code == 200
    text, fonts = _pdf(client, auth, case_id)
    assert "<U+" not in text, text[:500]
    flat = "".join(text.split())
    assert "骨髓-漢7" in flat and "原始细胞增多，建议流式细胞术。芽球が増加。모세포증가" in flat, text[:800]
    assert "WenQuanYiMicroHei" in fonts or "WenQuanYiZenHei" in fonts, fonts


def test_report_pdf_prints_indic_and_thai_scripts_shaped_with_noto_fonts(client, auth, sessions):
    """Hindi, Tamil, Bengali, Thai and Sinhala names and comments print as typed (before, as
    <U+0930>...), shaped: unshaped, the i-sign of "रि" would stand after its consonant and every
    virama would show bare."""
    from app.reports.fonts import NOTO_DIR

    if not (NOTO_DIR / "NotoSansDevanagari-Regular.ttf").is_file():
        pytest.skip("no Noto fonts: install Debian's fonts-noto-core (scripts/test.sh does)")
    case_id, _ = labelled_case(client, auth, sessions, ["BLA", "NGS"], "राम-शर्मा-7")
    comment = ("अस्थि मज्जा में ब्लास्ट बढ़े हुए। எலும்பு மஜ்ஜை சாதாரணம். অস্থিমজ্জা স্বাভাবিক। ไขกระดูกปกติ "
               "ශ්\u200dරී ලංකා, क्\u200dष ")  # joiners: a Sinhala conjunct, a Hindi half form
    assert client.post(f"/api/cases/{case_id}/sign", json={"comment": comment}, headers=auth).status_code == 200
    text, fonts = _pdf(client, auth, case_id)
    # Shaped: the glyphs HarfBuzz puts in for a conjunct or a reph carry no character of their
    # own (fpdf2 gives a cluster's text to its first glyph), and pypdf reads them back as control codes.
    flat = " ".join(re.sub(r"[\x00-\x08\x0b\x0e-\x1f]", "", text).split())
    assert flat != " ".join(text.split())
    assert "<U+" not in flat, flat[:600]
    for words in ("राम-शर्मा-7", "अस्थि मज्जा में ब्लास्ट", "எலும்பு மஜ்ஜை சாதாரணம்", "অস্থিমজ্জা স্বাভাবিক", "ไขกระดูกปกติ",
                  "ශ්\u200dරී ලංකා", "क्\u200dष"):  # a joiner drawn apart from its run came back with a space before it
        assert words in flat, (words, flat[:600])
    assert {"NotoSansDevanagari", "NotoSansTamil", "NotoSansBengali", "NotoSansThai"} <= fonts, fonts
    assert not any(name.startswith("WenQuanYi") for name in fonts), fonts  # no CJK font where none is needed


def test_report_pdf_prints_hebrew_and_arabic_right_to_left(client, auth, sessions):
    """Shaped by HarfBuzz: the words read in the PDF as typed (unshaped, they came out letter by
    letter backwards: "يعيبط مظعلا عاخن"), through line wraps and page breaks."""
    case_id, _ = labelled_case(client, auth, sessions, ["BLA", "NGS"], "MD-RTL")
    comment = "نخاع العظم طبيعي مع زيادة طفيفة في الأرومات. מח עצם תקין. " * 60  # about 3,500 characters
    assert client.post(f"/api/cases/{case_id}/sign", json={"comment": comment}, headers=auth).status_code == 200
    text, _ = _pdf(client, auth, case_id)
    flat = " ".join(text.split())
    for words in ("نخاع العظم طبيعي", "زيادة طفيفة في الأرومات", "מח עצם תקין"):
        assert flat.count(words) >= 55, (words, flat.count(words), flat[:600])  # a few cross a page's end
    assert "page 2 of" in flat and "<U+" not in flat


def test_relabel_and_sign_are_audited_and_model_label_changes_too(client, auth, sessions):
    case_id, ids = labelled_case(client, auth, sessions, ["UNK", "BLA"])
    client.patch(f"/api/cells/{ids[0]}", json={"label": "PLM"}, headers=auth)
    with sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.cell_id == ids[0])).one()
    assert (event.action, event.from_value, event.to_value) == ("label", "UNK", "PLM")
