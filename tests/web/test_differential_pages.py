"""Issue 13 on the pages: keys for every category, the unidentified group first, the panel with
intervals and ratios, sign-off refused (409) naming the unidentified cells, the report links,
and the administrators' category page."""
from __future__ import annotations

import re

from server.differential_helpers import labelled_case
from support.app import make_user

from .conftest import csrf_of, log_in


def test_review_page_keys_unidentified_first_and_panel(client, auth, sessions, page):
    case_id, ids = labelled_case(client, auth, sessions, ["UNK", "UNK", "BLA", "NGS", "NGS", "EBO"])
    html = client.get(f"/cases/{case_id}/review").text
    keys = dict(re.findall(r'data-label="([A-Z]+)" data-key="(\w)"', html))
    assert keys["PLM"] == "c" and keys["BLA"] == "b" and keys["EBO"] == "r"
    assert set(keys) >= {"BLA", "PMO", "MYB", "MMZ", "NGB", "NGS", "EOS", "BAS", "MON", "LYT", "PLM", "EBO",
                         "NIF", "PLT", "ART", "OTH"}
    groups = re.findall(r'id="group-([A-Z]+)"', html)
    assert groups[0] == "UNK"
    unk_group = html[html.index('id="group-UNK"'):html.index('id="group-BLA"')]
    assert all(f'id="cell-{i}"' in unk_group for i in ids[:2])
    # the panel: UNK row first (no percent), intervals, ratios, targets 200/300/500
    rows = re.findall(r'<tr class="c-(\w+)[^"]*" data-code="\1"', html)
    assert rows[0] == "UNK"
    assert "95 % CI" in html and 'data-index="me_ratio">3.00' in html
    assert "2 unidentified cells to classify before sign-off" in html
    for target in (200, 300, 500):
        assert f"differential?target={target}" in html


def test_sign_off_page_refused_with_the_count(client, auth, sessions, page):
    case_id, ids = labelled_case(client, auth, sessions, ["UNK", "UNK", "LYT"])
    r = client.post(f"/cases/{case_id}/sign", data={"csrf_token": page})
    assert r.status_code == 409 and "2 unidentified cells remain" in r.text
    r = client.post(f"/cases/{case_id}/relabel", headers={"HX-Request": "true", "X-CSRF-Token": page},
                    data={"items": f"{ids[0]}:1:PLM,{ids[1]}:1:LYT"})
    assert r.status_code == 200 and 'data-code="PLM"' in r.text
    r = client.post(f"/cases/{case_id}/sign", data={"csrf_token": page}, follow_redirects=False)
    assert r.status_code == 303
    head = client.get(f"/cases/{case_id}").text
    assert f"/api/cases/{case_id}/report.pdf" in head and f"/api/cases/{case_id}/fhir" in head
    pdf = client.get(f"/api/cases/{case_id}/report.pdf")  # the page's session is enough
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_relabel_page_refuses_a_code_outside_the_case_list(client, auth, sessions, page):
    case_id, ids = labelled_case(client, auth, sessions, ["BLA"])
    r = client.post(f"/cases/{case_id}/relabel", headers={"HX-Request": "true", "X-CSRF-Token": page},
                    data={"items": f"{ids[0]}:1:XYZ"})
    assert r.status_code == 422 and "XYZ" in r.text


def test_admin_edits_categories_on_the_page(client, sessions, token):
    make_user(sessions, "ada", "admin")
    assert client.get("/admin/categories", follow_redirects=False).status_code == 303  # not logged in
    log_in(client, "rita")
    assert client.get("/admin/categories").status_code == 403
    client.post("/logout", data={"csrf_token": csrf_of(client, "/cases")})
    log_in(client, "ada")
    html = client.get("/admin/categories").text
    codes = re.findall(r'name="code" value="(\w*)"', html)
    assert codes[:3] == ["BLA", "PMO", "MYB"] and codes[-1] == ""
    # post the list back with the plasma cell key remapped to "j" and a new category
    names = re.findall(r'name="name" value="([^"]*)"', html)
    keys = re.findall(r'name="key" value="(\w?)"', html)
    counted = re.findall(r'<option value="yes"( selected)?>', html)
    lineages = re.findall(r'name="lineage">(?:.*?)<option value="(\w*)" selected', html)
    assert len(codes) == len(names) == len(keys) == len(counted)
    rows = [(c, n, k, "yes" if sel else "no") for c, n, k, sel in zip(codes, names, keys, counted) if c]
    lineage_of = {c: lin for (c, *_), lin in zip(rows, lineages)}
    data = {"csrf_token": csrf_of(client, "/admin/categories"), "code": [], "name": [], "key": [], "counted": [],
            "lineage": []}
    for c, n, k, yes in rows + [("MAS", "Mast cell", "w", "yes")]:
        data["code"].append(c)
        data["name"].append(n)
        data["key"].append("j" if c == "PLM" else k)
        data["counted"].append(yes)
        data["lineage"].append(lineage_of.get(c, "other"))
    bad = {**data, "key": [k if c != "MAS" else "b" for c, k in zip(data["code"], data["key"])]}
    r = client.post("/admin/categories", data=bad)
    assert r.status_code == 422 and "key &#39;b&#39; repeats row 1" in r.text
    r = client.post("/admin/categories", data=data, follow_redirects=False)
    assert r.status_code == 303
    cats = {c["code"]: c for c in client.get("/api/taxonomy").json()}
    assert cats["PLM"]["key"] == "j" and cats["MAS"]["name"] == "Mast cell" and cats["EBO"]["lineage"] == "erythroid"
