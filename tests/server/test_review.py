"""Relabelling with optimistic locking, sign-off and the lock, the audit trail, CSV exports."""
from __future__ import annotations

import csv
import io
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from support.app import image_bytes, make_user, new_case, upload


def _cells(client, auth, case_id):
    return client.get(f"/api/cases/{case_id}/cells", headers=auth).json()


def test_relabel_versions_and_errors(client, auth, processed_case):
    cell = _cells(client, auth, processed_case)[0]
    r = client.patch(f"/api/cells/{cell['id']}", json={"label": "PMO", "version": 1}, headers=auth)
    assert r.status_code == 200, r.text
    assert (r.json()["label"], r.json()["label_source"], r.json()["version"]) == ("PMO", "reviewer", 2)
    stale = client.patch(f"/api/cells/{cell['id']}", json={"label": "LYT", "version": 1}, headers=auth)
    assert stale.status_code == 409 and "version" in stale.json()["detail"]
    assert client.patch(f"/api/cells/{cell['id']}", json={"label": "XYZ"}, headers=auth).status_code == 422
    assert client.patch("/api/cells/99999", json={"label": "LYT"}, headers=auth).status_code == 404
    assert client.patch(f"/api/cells/{cell['id']}", json={"label": "LYT"}, headers=auth).json()["version"] == 3

    audit = client.get(f"/api/cases/{processed_case}/audit", headers=auth).json()
    labels = [(e["from"], e["to"], e["user"], e["cell_id"]) for e in audit if e["action"] == "label"]
    assert labels == [(cell["label"], "PMO", "rita", cell["id"]), ("PMO", "LYT", "rita", cell["id"])]


def test_concurrent_relabels_one_conflict(client, auth, processed_case):
    cell = _cells(client, auth, processed_case)[1]
    clients = [TestClient(client.app) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(lambda pair: pair[0].patch(f"/api/cells/{cell['id']}", headers=auth,
                                                          json={"label": pair[1], "version": 1}).status_code,
                              zip(clients, ["BLA", "MON"])))
    assert sorted(codes) == [200, 409]


def test_sign_locks_the_case(client, auth, processed_case):
    cell = _cells(client, auth, processed_case)[0]
    r = client.post(f"/api/cases/{processed_case}/sign", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "signed" and r.json()["signed_by"] == "rita" and r.json()["signed_at"]
    assert client.post(f"/api/cases/{processed_case}/sign", headers=auth).status_code == 409
    r = client.patch(f"/api/cells/{cell['id']}", json={"label": "BLA", "version": cell["version"]}, headers=auth)
    assert r.status_code == 409 and "signed" in r.json()["detail"]
    assert upload(client, auth, processed_case, [("n.png", image_bytes(1))]).status_code == 409
    actions = [e["action"] for e in client.get(f"/api/cases/{processed_case}/audit", headers=auth).json()]
    assert actions == ["upload", "sign"]


def test_case_details_are_corrected_before_sign_off_and_audited(client, auth, processed_case):
    """A mistyped accession is corrected on the case (the reports carry the new one) and the
    history keeps both; once signed the case must be reopened first."""
    from pypdf import PdfReader

    path = f"/api/cases/{processed_case}"
    r = client.patch(path, json={"accession": " MD-2026-0042 ", "note": "aspirate, left iliac crest"}, headers=auth)
    assert r.status_code == 200
    assert (r.json()["accession"], r.json()["specimen"], r.json()["note"]) == ("MD-2026-0042", "bone marrow",
                                                                           "aspirate, left iliac crest")
    assert client.patch(path, json={"accession": "  "}, headers=auth).status_code == 422
    edits = [(e["user"], e["detail"]["field"], e["from"], e["to"])
             for e in client.get(f"{path}/audit", headers=auth).json() if e["action"] == "edit"]
    assert edits == [("rita", "accession", "MD-1", "MD-2026-0042"), ("rita", "note", "", "aspirate, left iliac crest")]
    pdf = client.get(f"{path}/report.pdf", headers=auth).content
    assert "Case: MD-2026-0042" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    client.post(f"{path}/sign", headers=auth)
    r = client.patch(path, json={"accession": "MD-3"}, headers=auth)
    assert r.status_code == 409 and "signed and locked" in r.json()["detail"]


def test_a_signed_case_reopened_for_a_correction_is_signed_again_as_an_amendment(client, auth, sessions,
                                                                                  processed_case):
    """Its signer or an administrator reopens it with a reason; the reason and the sign-off it
    undoes stay in the history; once signed again its PDF and FHIR report say they amend it."""
    from fhir.resources.R4B.bundle import Bundle
    from pypdf import PdfReader

    def pdf_text() -> str:
        r = client.get(f"/api/cases/{processed_case}/report.pdf", headers=auth)
        return " ".join(" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(r.content)).pages)

    reopen = f"/api/cases/{processed_case}/reopen"
    assert client.post(reopen, json={"reason": "not signed yet"}, headers=auth).status_code == 409
    signed = client.post(f"/api/cases/{processed_case}/sign", headers=auth).json()
    olga = {"Authorization": f"Bearer {make_user(sessions, 'olga')[1]}"}
    r = client.post(reopen, json={"reason": "cell 1 is a plasma cell"}, headers=olga)
    assert r.status_code == 403
    assert r.json()["detail"] == f"only the user who signed case {processed_case} or an administrator can reopen it"
    assert client.post(reopen, json={"reason": "  "}, headers=auth).status_code == 422
    r = client.post(reopen, json={"reason": " cell 1 is a plasma cell "}, headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["signed_by"] is None
    cell = _cells(client, auth, processed_case)[0]
    assert client.patch(f"/api/cells/{cell['id']}", json={"label": "PLM"}, headers=auth).status_code == 200
    when = signed["signed_at"][:16].replace("T", " ")
    assert "PRELIMINARY" in pdf_text() and f"AMENDS the sign-off by rita at {when} UTC" in pdf_text()

    assert client.post(f"/api/cases/{processed_case}/sign", headers=olga).status_code == 200
    audit = client.get(f"/api/cases/{processed_case}/audit", headers=auth).json()
    assert [e["action"] for e in audit] == ["upload", "sign", "reopen", "label", "sign"]
    assert audit[2]["user"] == "rita" and audit[2]["detail"]["reason"] == "cell 1 is a plasma cell"
    text = pdf_text()
    assert "Bone-marrow differential count: amended report" in text and "Signed by: olga" in text
    assert "reopened by rita" in text and "cell 1 is a plasma cell" in text and "PRELIMINARY" not in text
    bundle = Bundle.model_validate_json(client.get(f"/api/cases/{processed_case}/fhir", headers=auth).content)
    assert {e.resource.status for e in bundle.entry} == {"amended"}
    ada = {"Authorization": f"Bearer {make_user(sessions, 'ada', 'admin')[1]}"}
    assert client.post(reopen, json={"reason": "an administrator may reopen it"}, headers=ada).status_code == 200


def test_sign_refused_while_processing_or_empty(client, auth):
    case_id = new_case(client, auth)
    assert client.post(f"/api/cases/{case_id}/sign", headers=auth).status_code == 409
    upload(client, auth, case_id, [("a.png", image_bytes(1))])
    r = client.post(f"/api/cases/{case_id}/sign", headers=auth)
    assert r.status_code == 409 and "processing" in r.json()["detail"]


def test_csv_exports(client, auth, processed_case):
    cell = _cells(client, auth, processed_case)[0]
    new = "NIF" if cell["label"] != "NIF" else "BLA"
    client.patch(f"/api/cells/{cell['id']}", json={"label": new}, headers=auth)
    case = client.get(f"/api/cases/{processed_case}", headers=auth).json()

    r = client.get(f"/api/cases/{processed_case}/differential.csv", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0].startswith("#") and "NIF" in lines[0] and "denominator" in lines[0]
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    # issue 13: UNK first, then the case's category list (the seven model classes among them),
    # then one row per index (ratios), which has no reviewed count
    rows = [row for row in rows if row["reviewed_count"] != ""]
    codes = [row["class_code"] for row in rows]
    assert codes[0] == "UNK" and {"BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO"} <= set(codes)
    assert codes == list(case["counts"])
    assert sum(int(row["model_count"]) for row in rows) == 6
    assert {row["class_code"]: int(row["reviewed_count"]) for row in rows} == case["counts"]
    nif = next(row for row in rows if row["class_code"] == "NIF")
    assert nif["percent"] == ""
    uncounted = {"UNK", *(c["code"] for c in case["categories"] if not c["counted"])}
    counted = sum(int(row["reviewed_count"]) for row in rows if row["class_code"] not in uncounted)
    for row in rows:
        if row["class_code"] not in uncounted and counted:
            assert abs(float(row["percent"]) - 100 * int(row["reviewed_count"]) / counted) < 0.01

    r = client.get(f"/api/cases/{processed_case}/cells.csv", headers=auth)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["file", "model_class", "probability", "final_class", "changed_by", "when"]
    assert len(rows) == 6
    changed = next(row for row in rows if row["file"] == cell["filename"])
    assert (changed["final_class"], changed["changed_by"]) == (new, "rita") and changed["when"]
    assert all(row["changed_by"] == "model" for row in rows if row is not changed)

    rows = list(csv.DictReader(io.StringIO(client.get("/api/cases.csv", headers=auth).text)))
    assert len(rows) == 1 and rows[0]["accession"] == "MD-1"
    assert {code: int(rows[0][code]) for code in case["counts"]} == case["counts"]


def test_case_list_and_formula_safe_csv(client, auth):
    new_case(client, auth, "=HYPERLINK(\"x\")")
    new_case(client, auth, "MD-2")
    cases = client.get("/api/cases", headers=auth).json()
    assert [c["accession"] for c in cases] == ["MD-2", "=HYPERLINK(\"x\")"]
    assert all(c["status"] == "empty" and c["cells_total"] == 0 for c in cases)
    text = client.get("/api/cases.csv", headers=auth).text
    assert "'=HYPERLINK" in text
    r = client.post("/api/cases", json={"accession": "MD-3", "specimen": "peripheral blood", "note": "n"},
                    headers=auth)
    assert r.status_code == 201 and r.json()["specimen"] == "peripheral blood"
    assert client.post("/api/cases", json={}, headers=auth).status_code == 422
    assert client.get("/api/cases/999", headers=auth).status_code == 404


CELL_KEYS = {"id", "filename", "status", "predicted", "probability", "top3", "label", "label_source", "version",
             "quality_flags", "quality", "model_version", "unidentified"}


def test_cell_json_keys_are_the_api_schemas(client, auth, processed_case):
    """The cells service's view also carries what the review page reads; the API answers its schema only."""
    cell = _cells(client, auth, processed_case)[0]
    assert set(cell) == CELL_KEYS
    assert set(client.get(f"/api/cells/{cell['id']}", headers=auth).json()) == CELL_KEYS
    r = client.patch(f"/api/cells/{cell['id']}", json={"label": "PMO", "version": cell["version"]}, headers=auth)
    assert set(r.json()) == CELL_KEYS


def test_ids_past_int64_are_not_found(client, auth):
    """A request may send any integer; ids the database cannot hold are simply not there."""
    for path in (f"/api/cases/{2**63}", f"/api/cells/{2**63}", f"/api/uploads/{2**63}", "/api/uploads/0"):
        r = client.get(path, headers=auth)
        assert r.status_code == 404, (path, r.status_code, r.text)


def test_the_signers_comment_is_on_the_case_the_pdf_the_fhir_conclusion_and_the_history(
        client, auth, sessions, processed_case):
    """A pathologist's interpretation goes on the report with the sign-off; reopening takes it off
    (the history keeps it) and the next sign-off states its own."""
    from fhir.resources.R4B.bundle import Bundle
    from pypdf import PdfReader

    path = f"/api/cases/{processed_case}"
    comment = "Normocellular marrow with trilineage haematopoiesis.\nNo excess of blasts."
    r = client.post(f"{path}/sign", json={"comment": "x" * 4001}, headers=auth)
    assert r.status_code == 422 and client.get(path, headers=auth).json()["status"] == "ready"
    r = client.post(f"{path}/sign", json={"comment": f"  {comment}  "}, headers=auth)
    assert r.status_code == 200 and r.json()["sign_comment"] == comment
    pdf = PdfReader(io.BytesIO(client.get(f"{path}/report.pdf", headers=auth).content))
    text = " ".join(" ".join(page.extract_text().split()) for page in pdf.pages)
    assert "Comment: Normocellular marrow with trilineage haematopoiesis. No excess of blasts." in text
    bundle = Bundle.model_validate_json(client.get(f"{path}/fhir", headers=auth).content)
    report = next(e.resource for e in bundle.entry if e.resource.get_resource_type() == "DiagnosticReport")
    assert report.conclusion.startswith(comment)

    assert client.post(f"{path}/reopen", json={"reason": "one more look"}, headers=auth).status_code == 200
    assert client.get(path, headers=auth).json()["sign_comment"] is None
    audit = client.get(f"{path}/audit", headers=auth).json()
    assert audit[-2]["detail"] == {"comment": comment} and audit[-1]["detail"]["comment"] == comment
    r = client.post(f"{path}/sign", headers=auth)  # no body: signed without a comment
    assert r.status_code == 200 and r.json()["sign_comment"] is None
    text = " ".join(page.extract_text() for page in
                    PdfReader(io.BytesIO(client.get(f"{path}/report.pdf", headers=auth).content)).pages)
    assert "Comment:" not in text


def test_an_accession_or_specimen_is_one_line(client, auth, sessions):
    """A line break or tab would start a new row in the CSVs' headers and a new line in the LIS:
    refused on creation and on correction; a case stored before the rule keeps its CSV whole."""
    from app.cases.models import Case

    for body in ({"accession": "BM-1\nevil,row"}, {"accession": "BM-1", "specimen": "marrow\taspirate"}):
        r = client.post("/api/cases", json=body, headers=auth)
        assert r.status_code == 422 and "must be one line, without tabs or other control characters" in r.text
    case_id = new_case(client, auth, "BM-2")
    r = client.patch(f"/api/cases/{case_id}", json={"accession": "BM-2\r\nx"}, headers=auth)
    assert r.status_code == 422
    with sessions() as session:  # as an older release may have stored it
        session.get(Case, case_id).accession = "BM-2\nevil,row"
        session.commit()
    text = client.get(f"/api/cases/{case_id}/differential.csv", headers=auth).text
    assert "# case {} accession BM-2 evil,row status empty".format(case_id) in text
    assert all(line.startswith("#") for line in text.splitlines()[:2])
