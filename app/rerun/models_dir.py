"""The selectable models: every checkpoint folder (with a model card) beside the configured
one, i.e. in `models/` for the shipped layout. Torch-free: reads the cards' JSON only."""
from __future__ import annotations

import json
from pathlib import Path

from app.config import Settings
from app.errors import DomainError
from app.ml.card import CARD_FILE


class UnknownModel(DomainError):
    status_code = 422


def models_root(settings: Settings) -> Path:
    return Path(settings.model_dir).resolve().parent


def available(settings: Settings) -> list[dict]:
    """[{"name", "version", "classes", "configured"}] by folder name; the configured model first."""
    configured = Path(settings.model_dir).resolve()
    out = []
    for folder in sorted(p for p in models_root(settings).iterdir() if (p / CARD_FILE).is_file()):
        try:
            card = json.loads((folder / CARD_FILE).read_text())
        except (OSError, ValueError):
            continue
        out.append({"name": folder.name, "version": card.get("version", folder.name),
                    "classes": [c["code"] for c in card.get("classes", [])],
                    "configured": folder.resolve() == configured})
    out.sort(key=lambda m: not m["configured"])
    return out


def model_path(settings: Settings, name: str | None) -> Path:
    """The folder of a model by name (None: the configured one); refuses anything not listed."""
    if name is None:
        return Path(settings.model_dir)
    names = [m["name"] for m in available(settings)]
    if name not in names:  # also keeps a name from ever being a path (../, /)
        raise UnknownModel(f"unknown model {name!r}; expected one of {', '.join(names)}")
    return models_root(settings) / name
