"""The class list the web side uses: read from the model card of the configured checkpoint.

Reads the card's JSON directly (app.ml.model would load torch into the web process); falls
back to the default taxonomy when no checkpoint is there yet.
"""
from __future__ import annotations

import json
from pathlib import Path

from app.ml.taxonomy import CLASSES, CellClass

CARD_FILE = "model_card.json"  # = app.ml.model.CARD_FILE


def load_classes(model_dir: Path) -> tuple[CellClass, ...]:
    card = Path(model_dir) / CARD_FILE
    if not card.is_file():
        return CLASSES
    return tuple(CellClass(c["code"], c["name"], c.get("counted", True), c.get("key", ""))
                 for c in json.loads(card.read_text())["classes"])
