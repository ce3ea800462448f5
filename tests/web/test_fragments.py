"""HTMX partials return the fragment they promise; every form refuses a missing CSRF token;
relabelling from the page goes through the cells service (versions, lock, audit)."""
from __future__ import annotations

import re

import pytest
from support.app import image_bytes, make_user, new_case, upload

from .conftest import log_in

FORMS = [  # every state-changing page route, with a body that would otherwise be accepted
    ("/login", {"name": "rita", "password": "a long password"}),
    ("/setup", {"name": "ada", "password": "a long password", "password2": "a long password"}),
    ("/logout", {}),
    ("/cases", {"accession": "BM-1"}),
    ("/cases/{case}/uploads", None),
    ("/cases/{case}/sign", {}),
    ("/cases/{case}/rerun", {"model": "x"}),
    ("/cases/{case}/relabel", {"items": "{cell}:1:BLA"}),
    ("/admin/users", {"name": "bob", "role": "reviewer", "password": "a long password"}),
    ("/admin/users/rita/active", {"active": "false"}),
]


def _cells(client, auth, case_id):
    return client.get(f"/api/cases/{case_id}/cells", headers=auth).json()


@pytest.mark.parametrize("path, data", FORMS, ids=[p for p, _ in FORMS])
@pytest.mark.parametrize("sent", ["missing", "wrong"])
def test_forms_refuse_a_missing_or_wrong_csrf_token(client, auth, page, path, data, sent):
    case_id = new_case(client, auth)
    cell = upload(client, auth, case_id, [("c.png", image_bytes(7))]).json()["accepted"][0]["cell_id"]
    url = path.format(case=case_id, cell=cell)
    body = {k: v.format(cell=cell) for k, v in (data or {}).items()}
    if sent == "wrong":
        body["csrf_token"] = ("y" if page[0] == "x" else "x") + page[1:]  # differs whatever the token
    files = [("files", ("a.png", image_bytes(1), "image/png"))] if data is None else None
    r = client.post(url, data=body, files=files, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text, (url, r.status_code, r.text[:200])
    # the same request with the HTMX header shows the refusal in the page's message bar
    r = client.post(url, data=body, files=files, headers={"HX-Request": "true"})
    assert r.status_code == 403 and r.headers["HX-Retarget"] == "#messages" and r.text.startswith('<p class="msg error"')


def test_partials(client, auth, htmx, processed_case):
    cell = _cells(client, auth, processed_case)[0]["id"]
    expected = {
        f"/cases/{processed_case}/gallery?sort=upload&show=all": '<section class="group c-BLA',
        f"/cases/{processed_case}/differential?target=500": '<section id="differential"',
        f"/cases/{processed_case}/progress": '<div id="progress"',
        f"/cases/{processed_case}/history": '<table class="grid history">',
        f"/cases/{processed_case}/head": '<section class="panel case-head" id="case-head"',
        f"/cases/{processed_case}/uploads": '<section class="panel" id="uploads"',
        f"/cells/{cell}/detail": '<section id="detail"',
        "/cases/rows": "<tr>",
    }
    for url, start in expected.items():
        r = client.get(url, headers=htmx)
        assert r.status_code == 200, url
        assert r.text.lstrip().startswith(start) and "<html" not in r.text, (url, r.text[:120])
    assert "/ 500" in client.get(f"/cases/{processed_case}/differential?target=500").text
    detail = client.get(f"/cells/{cell}/detail").text
    assert f"/api/cells/{cell}/gradcam" in detail and len(re.findall(r'class="bar c-', detail)) == 3
    progress = client.get(f"/cases/{processed_case}/progress")
    assert progress.headers["HX-Trigger"] == "processing-done" and "every 1s" not in progress.text


def test_gallery_filters_and_sort(client, auth, htmx, processed_case):
    cells = _cells(client, auth, processed_case)
    gallery = client.get(f"/cases/{processed_case}/gallery?sort=confidence", headers=htmx).text
    ids = [int(i) for i in re.findall(r'id="cell-(\d+)"', gallery)]
    ranks = dict(zip(ids, map(int, re.findall(r'data-rank="(\d+)"', gallery))))
    by_confidence = [c["id"] for c in sorted(cells, key=lambda c: (c["probability"], c["id"]))]
    assert sorted(ranks, key=ranks.get) == by_confidence
    assert client.get(f"/cases/{processed_case}/gallery?show=changed", headers=htmx).text.count('class="tile ') == 0
    client.patch(f"/api/cells/{cells[0]['id']}", json={"label": "EOS"}, headers=auth)
    changed = client.get(f"/cases/{processed_case}/gallery?show=changed", headers=htmx).text
    assert re.findall(r'id="cell-(\d+)"', changed) == [str(cells[0]["id"])] and "tile c-EOS changed" in changed


def test_relabel_undo_conflict_and_lock(client, auth, htmx, processed_case, sessions):
    cell = _cells(client, auth, processed_case)[0]
    new = "BLA" if cell["label"] != "BLA" else "LYT"
    url = f"/cases/{processed_case}/relabel"
    r = client.post(url, data={"items": f"{cell['id']}:{cell['version']}:{new}", "target": "200"}, headers=htmx)
    assert r.status_code == 200 and "1 cell → " + new in r.text
    assert f'id="cell-{cell["id"]}"' in r.text and 'hx-swap-oob="outerHTML"' in r.text
    assert '<section id="differential"' in r.text
    assert client.get(f"/api/cases/{processed_case}", headers=auth).json()["counts"][new] >= 1
    # undo: back to the previous label, with the version the page now holds
    r = client.post(url, data={"items": f"{cell['id']}:{cell['version'] + 1}:{cell['label']}"}, headers=htmx)
    assert r.status_code == 200
    audit = [(e["from"], e["to"], e["user"]) for e in client.get(f"/api/cases/{processed_case}/audit",
                                                                   headers=auth).json() if e["action"] == "label"]
    assert audit == [(cell["label"], new, "rita"), (new, cell["label"], "rita")]
    # a second reviewer with a stale page
    r = client.post(url, data={"items": f"{cell['id']}:{cell['version']}:EOS"}, headers=htmx)
    assert r.status_code == 409 and "was changed by rita at" in r.text and "reload" in r.text
    # signed: locked, with who and when
    assert client.post(f"/api/cases/{processed_case}/sign", headers=auth).status_code == 200
    r = client.post(url, data={"items": f"{cell['id']}:{cell['version'] + 2}:EOS"}, headers=htmx)
    assert r.status_code == 409 and re.search(r"Case signed by rita at [\d-]+ [\d:]+ UTC — locked", r.text)
    page = client.get(f"/cases/{processed_case}").text
    assert 'id="signed"' in page and "Signed by <b>rita</b>" in page and "Upload cells" not in page
    assert "disabled" in client.get(f"/cases/{processed_case}/review").text


def test_relabel_refuses_bad_input(client, auth, htmx, processed_case):
    url = f"/cases/{processed_case}/relabel"
    cell = _cells(client, auth, processed_case)[0]
    assert client.post(url, data={"items": f"{cell['id']}:1:XYZ"}, headers=htmx).status_code == 422
    assert client.post(url, data={"items": "nonsense"}, headers=htmx).status_code == 422
    other = new_case(client, auth, "MD-2")
    r = client.post(f"/cases/{other}/relabel", data={"items": f"{cell['id']}:1:BLA"}, headers=htmx)
    assert r.status_code == 404


def test_sign_from_the_page(client, auth, page, processed_case):
    r = client.post(f"/cases/{processed_case}/sign", data={"csrf_token": page}, follow_redirects=False)
    assert r.status_code == 303
    again = client.post(f"/cases/{processed_case}/sign", data={"csrf_token": page})
    assert again.status_code == 409 and "signed and locked" in again.text


def test_edit_case_details_from_the_page(client, auth, page, processed_case):
    r = client.post(f"/cases/{processed_case}/edit", data={"csrf_token": page, "accession": "", "specimen": "x"})
    assert r.status_code == 422 and "the accession and the specimen need 1 to 120 characters" in r.text
    r = client.post(f"/cases/{processed_case}/edit", follow_redirects=False,
                    data={"csrf_token": page, "accession": "MD-7", "specimen": "bone marrow", "note": ""})
    assert r.status_code == 303
    case_page = client.get(f"/cases/{processed_case}").text
    assert "<h1>MD-7 " in case_page and "accession: MD-1 → <b>MD-7</b>" in case_page
    client.post(f"/cases/{processed_case}/sign", data={"csrf_token": page})
    assert "Edit case details" not in client.get(f"/cases/{processed_case}").text


def test_reopen_from_the_page_for_its_signer_only(client, auth, page, sessions, processed_case):
    """The signer sees "Reopen for correction" on the signed case; the reason is required and
    shows in the history; another reviewer has no button and is refused."""
    from fastapi.testclient import TestClient

    client.post(f"/cases/{processed_case}/sign", data={"csrf_token": page})
    assert "Reopen for correction" in client.get(f"/cases/{processed_case}").text
    olga = TestClient(client.app)
    make_user(sessions, "olga")
    olga_csrf = log_in(olga, "olga")
    assert "Reopen for correction" not in olga.get(f"/cases/{processed_case}").text
    r = olga.post(f"/cases/{processed_case}/reopen", data={"csrf_token": olga_csrf, "reason": "a typo"})
    assert r.status_code == 403 and "only the user who signed" in r.text
    r = client.post(f"/cases/{processed_case}/reopen", data={"csrf_token": page, "reason": " "})
    assert r.status_code == 422 and "say why the case is reopened, in 3 to 500 characters" in r.text
    r = client.post(f"/cases/{processed_case}/reopen", data={"csrf_token": page, "reason": "cell 2 is a myelocyte"},
                    follow_redirects=False)
    assert r.status_code == 303
    case_page = client.get(f"/cases/{processed_case}").text
    assert "<b>reopened</b>: cell 2 is a myelocyte" in case_page and "Sign off" in case_page
    assert "for a correction: cell 2 is a myelocyte. Signing it again issues an amended report." in case_page
    client.post(f"/cases/{processed_case}/sign", data={"csrf_token": page})
    assert "Signing it again" not in client.get(f"/cases/{processed_case}/head").text


def test_withdraw_an_upload_from_the_case_page(client, auth, page, processed_case):
    """Each upload of an open case has "Withdraw…" with a required reason; afterwards the upload
    says so, the history names who and why, and its cells are out of the count."""
    upload_id = client.get(f"/api/cases/{processed_case}/audit", headers=auth).json()[0]["detail"]["upload_id"]
    action = f"/cases/{processed_case}/uploads/{upload_id}/withdraw"
    assert f'action="{action}"' in client.get(f"/cases/{processed_case}").text
    r = client.post(action, data={"csrf_token": page, "reason": ""})
    assert r.status_code == 422 and "say why the upload is withdrawn" in r.text
    r = client.post(f"/cases/{processed_case + 1}/uploads/{upload_id}/withdraw",
                    data={"csrf_token": page, "reason": "wrong patient"})
    assert r.status_code == 404
    r = client.post(action, data={"csrf_token": page, "reason": "wrong patient"}, follow_redirects=False)
    assert r.status_code == 303
    case_page = client.get(f"/cases/{processed_case}").text
    assert "<b>withdrawn</b>" in case_page and f'action="{action}"' not in case_page
    assert f"<b>upload {upload_id} withdrawn</b> (6 cells): wrong patient" in case_page
    assert client.get(f"/api/cases/{processed_case}", headers=auth).json()["cells_total"] == 0
    assert 'class="tile ' not in client.get(f"/cases/{processed_case}/review").text
    case_id = new_case(client, auth)  # withdrawn before a worker took it: no progress bar waits for it
    withdrawn = upload(client, auth, case_id, [("a.png", image_bytes(1))]).json()["upload_id"]
    assert "estimating" in client.get(f"/cases/{case_id}").text
    client.post(f"/api/uploads/{withdrawn}/withdraw", json={"reason": "wrong patient"}, headers=auth)
    assert "estimating" not in client.get(f"/cases/{case_id}").text


def test_upload_from_the_page_lists_rejected_files(client, auth, htmx):
    case_id = new_case(client, auth)
    files = [("files", (f"c{i}.png", image_bytes(i), "image/png")) for i in range(3)]
    files.append(("files", ("notes.txt", b"not an image", "text/plain")))
    r = client.post(f"/cases/{case_id}/uploads", files=files, headers=htmx)
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "uploaded", r.text
    assert "3 files accepted" in r.text and "1 rejected" in r.text and "<b>notes.txt</b>:" in r.text
    assert 'hx-trigger="every 1s"' in r.text and "0</b> of <b>3</b> cells classified" in r.text
    review = client.get(f"/cases/{case_id}/review").text  # reviewing while the rest is processed
    assert 'hx-trigger="every 1s"' in review and review.count('class="tile c-pending') == 3


def test_upload_from_the_page_says_when_the_storage_cannot_take_it(client, auth, htmx, settings):
    case_id = new_case(client, auth)
    settings.storage_path.mkdir(parents=True, exist_ok=True)
    (settings.storage_path / "images").write_text("not a folder")  # a full or read-only disk reads the same
    r = client.post(f"/cases/{case_id}/uploads", files=[("files", ("c1.png", image_bytes(1), "image/png"))],
                    headers=htmx)
    assert r.status_code == 507 and r.headers["HX-Retarget"] == "#messages"
    assert "the server could not store c1.png: Not a directory. Nothing from this upload was saved" in r.text


def test_session_reaches_the_api_but_not_without_csrf(client, auth, page, processed_case):
    cell = _cells(client, auth, processed_case)[0]
    thumb = client.get(f"/api/cells/{cell['id']}/thumbnail")  # the cookie alone: what <img> sends
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert "private" in thumb.headers["cache-control"] and "max-age" in thumb.headers["cache-control"]
    assert client.get(f"/api/cases/{processed_case}/cells.csv").status_code == 200
    assert client.patch(f"/api/cells/{cell['id']}", json={"label": "BLA"}).status_code == 401
    r = client.patch(f"/api/cells/{cell['id']}", json={"label": "BLA"}, headers={"X-CSRF-Token": page})
    assert r.status_code == 200
    client.cookies.clear()
    assert client.get(f"/api/cells/{cell['id']}/thumbnail").status_code == 401


def test_expired_session_on_a_fragment_redirects_to_login(client, processed_case):
    r = client.get(f"/cases/{processed_case}/gallery", headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login"


def test_sign_off_with_a_comment_from_the_case_page(client, auth, page, processed_case):
    """The sign-off form takes the comment for the report; the signed case shows it and the
    history quotes it; after a reopening the form offers the earlier comment to sign again."""
    r = client.post(f"/cases/{processed_case}/sign", data={"csrf_token": page, "comment": "y" * 4001})
    assert r.status_code == 422 and "the comment may have at most 4,000 characters; the case is not signed" in r.text
    r = client.post(f"/cases/{processed_case}/sign", data={"csrf_token": page, "comment": "Reactive <marrow>."},
                    follow_redirects=False)
    assert r.status_code == 303
    case_page = client.get(f"/cases/{processed_case}").text
    assert '<p class="sign-comment" id="sign-comment"><b>Comment:</b> Reactive &lt;marrow&gt;.</p>' in case_page
    assert "<b>signed off</b>: “Reactive &lt;marrow&gt;.”" in case_page
    client.post(f"/cases/{processed_case}/reopen", data={"csrf_token": page, "reason": "recount blasts"})
    head = client.get(f"/cases/{processed_case}/head").text
    assert 'id="sign-comment"' not in head
    assert re.search(r'<textarea name="comment"[^>]*>Reactive &lt;marrow&gt;.</textarea>', head)
