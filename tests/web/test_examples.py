"""Signed examples beside a cell under review: other signed cases' cells of its top-3 classes
and of its label, the model-and-signer ones first; never its own case's, never unsigned ones."""
from __future__ import annotations

import re

from sqlalchemy import update

from app.cells.models import Cell
from server.differential_helpers import labelled_case


def _with_thumbnails(sessions, ids: list[int]) -> None:
    """What the worker writes; the helper's cells have none."""
    with sessions() as session:
        session.execute(update(Cell).where(Cell.id.in_(ids)).values(thumbnail_path=Cell.image_path))
        session.commit()


def _shown(client, cell_id: int) -> dict[str, list[int]]:
    html = client.get(f"/cells/{cell_id}/examples").text
    rows = re.findall(r'data-code="(\w+)">(.*?)</div>', html, re.S)
    return {code: [int(i) for i in re.findall(r"/api/cells/(\d+)/thumbnail", body)] for code, body in rows}


def test_examples_come_from_other_signed_cases_model_and_signer_first(client, auth, sessions, page):
    signed, a = labelled_case(client, auth, sessions, ["BLA", "BLA", "NGS", "MON"], "BM-A")
    assert client.patch(f"/api/cells/{a[2]}", json={"label": "BLA"}, headers=auth).status_code == 200
    unsigned, c = labelled_case(client, auth, sessions, ["BLA"], "BM-C")
    current, b = labelled_case(client, auth, sessions, ["BLA", "UNK", "EBO"], "BM-B")
    _with_thumbnails(sessions, a + b + c)
    assert client.post(f"/api/cases/{signed}/sign", headers=auth).status_code == 200

    # the cells the model called BLA and the signer kept (newest first), then the one a reviewer made BLA
    assert _shown(client, b[0]) == {"BLA": [a[1], a[0], a[2]]}
    assert _shown(client, b[1]) == {"BLA": [a[1], a[0], a[2]]}  # UNK: its model's classes only
    # the helper's model called the erythroblast BLA: its label's examples come first, none signed yet
    assert _shown(client, b[2]) == {"EBO": [], "BLA": [a[1], a[0], a[2]]}
    assert "none signed yet" in client.get(f"/cells/{b[2]}/examples").text
    # a signed case's own cells are not its examples
    assert _shown(client, a[0])["BLA"] == []
    assert 'hx-get="/cells/{}/examples"'.format(b[0]) in client.get(f"/cells/{b[0]}/detail").text
    assert client.get(f"/api/cells/{a[0]}/thumbnail", headers=auth).status_code == 200
