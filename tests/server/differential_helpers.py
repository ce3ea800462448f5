"""Cases with chosen labels, without running the model: cells uploaded through the API, then
marked processed with the given labels through the database (what the worker would write)."""
from __future__ import annotations

from sqlalchemy import update

from app.cells.models import Cell, Prediction

from support.app import image_bytes, new_case, upload


def labelled_case(client, auth, sessions, labels: list[str], accession: str = "MD-L",
                  unidentified: str = "low confidence") -> tuple[int, list[int]]:
    case_id = new_case(client, auth, accession)
    r = upload(client, auth, case_id, [(f"c{i}.png", image_bytes(1000 + i)) for i in range(len(labels))])
    assert r.status_code == 202, r.text
    ids = [a["cell_id"] for a in r.json()["accepted"]]
    with sessions() as session:
        for cell_id, label in zip(ids, labels):
            predicted = "BLA" if label in ("UNK", "PLM", "EBO", "MYB") else label
            session.add(Prediction(cell_id=cell_id, model_version="it-random", predicted=predicted, probability=0.5,
                                   probs={predicted: 0.5}, top3=[{"code": predicted, "name": predicted, "p": 0.5}],
                                   unidentified=unidentified if label == "UNK" else None))
            session.execute(update(Cell).where(Cell.id == cell_id).values(
                status="done", label=label, label_source="model", version=1))
        session.commit()
    return case_id, ids
