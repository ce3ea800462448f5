"""The model card and the taxonomy: what a checkpoint is, without loading it (torch-free).

A checkpoint is a directory holding `model.safetensors` (weights, see `checkpoint`) and
`model_card.json` (this module's `ModelCard`). The card carries the classes the model was
trained with; the web process reads them from here and never imports torch. `CLASSES` is the
default seven-class bone-marrow taxonomy for new models.

Only the standard library is imported at module level: the card's defaults that come from the
input transform (`preprocess`, which needs OpenCV) are filled in when a default card is made.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
DEFAULT_ARCH = "rexnet_150"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
BM7_MODEL = MODELS_DIR / "rexnet150-bm7"  # the seven bone-marrow classes only (2026-11)
MARROW_MODEL = MODELS_DIR / "rexnet150-marrow13"  # 11 counted marrow classes + NIF, PLT; two labs
SHIPPED_MODEL = MARROW_MODEL  # the default of classify, evaluate and the web app


@dataclass(frozen=True)
class CellClass:
    code: str
    name: str
    counted: bool  # counted in the differential's percent denominator
    key: str  # keyboard shortcut on the review page

    def as_dict(self) -> dict:
        return {"code": self.code, "name": self.name, "counted": self.counted, "key": self.key}

    @classmethod
    def from_dict(cls, d: dict) -> CellClass:
        return cls(d["code"], d["name"], d.get("counted", True), d.get("key", ""))


# The whole marrow: the classes a differential counts that the Matek and PBC data sets hold
# (codes are the Matek bone-marrow data set's), plus the not-counted NIF and PLT.
MARROW_CLASSES: tuple[CellClass, ...] = (
    CellClass("BLA", "Blast", True, "b"),
    CellClass("PMO", "Promyelocyte", True, "p"),
    CellClass("MYB", "Myelocyte", True, "y"),
    CellClass("MMZ", "Metamyelocyte", True, "t"),
    CellClass("NGB", "Band neutrophil", True, "d"),
    CellClass("NGS", "Segmented neutrophil", True, "n"),
    CellClass("EOS", "Eosinophil", True, "e"),
    CellClass("BAS", "Basophil", True, "s"),
    CellClass("MON", "Monocyte", True, "m"),
    CellClass("LYT", "Lymphocyte", True, "l"),
    CellClass("EBO", "Erythroblast", True, "r"),
    CellClass("NIF", "Not identifiable", False, "x"),
    CellClass("PLT", "Platelet", False, "k"),
)
# The shipped model's seven classes, in its output order (the same rows as the whole marrow's).
CLASSES: tuple[CellClass, ...] = tuple(
    next(c for c in MARROW_CLASSES if c.code == code) for code in ("BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO"))
TAXONOMIES: dict[str, tuple[CellClass, ...]] = {"bm7": CLASSES, "marrow": MARROW_CLASSES}

CODES: tuple[str, ...] = tuple(c.code for c in CLASSES)


def _preprocess():
    from app.ml import preprocess  # OpenCV: only when a card is made from defaults

    return preprocess


@dataclass
class ModelCard:
    """Everything needed to use, trust and reproduce a checkpoint (stored as `model_card.json`)."""

    architecture: str = DEFAULT_ARCH
    classes: list[dict] = field(default_factory=lambda: [c.as_dict() for c in CLASSES])
    input_size: int = 224
    mean: list[float] = field(default_factory=lambda: list(_preprocess().IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(_preprocess().IMAGENET_STD))
    preprocessing: str = field(default_factory=lambda: _preprocess().DESCRIPTION)
    version: str = "untrained"
    temperature: float = 1.0
    framing: dict = field(default_factory=dict)  # empty: the whole image (see app.ml.framing)
    unidentified: dict = field(default_factory=dict)  # the UNK rule (app.ml.unidentified.Rule)
    training: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    notes: str = ""

    @property
    def codes(self) -> list[str]:
        return [c["code"] for c in self.classes]

    @property
    def cell_classes(self) -> list[CellClass]:
        return [CellClass.from_dict(c) for c in self.classes]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, default=float) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """The card in `path`; a damaged one (cut short, edited by hand) is a ValueError naming it."""
        try:
            data = json.loads(Path(path).read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"{path}: not a readable model card: {exc}") from exc
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def is_checkpoint(model_dir: str | Path) -> bool:
    d = Path(model_dir)
    return (d / WEIGHTS_FILE).is_file() and (d / CARD_FILE).is_file()


def require_checkpoint(model_dir: str | Path) -> Path:
    """`model_dir` as a Path, or the error every command gives for a folder without a model."""
    d = Path(model_dir)
    if not is_checkpoint(d):
        raise FileNotFoundError(f"{d}: not a MarrowDiff checkpoint (needs {WEIGHTS_FILE} and {CARD_FILE})")
    return d


def card_in(model_dir: str | Path) -> ModelCard | None:
    """The card of the checkpoint in `model_dir`; None when none is there yet (a fresh install
    before `marrow train`)."""
    path = Path(model_dir) / CARD_FILE
    return ModelCard.load(path) if path.is_file() else None


def load_classes(model_dir: str | Path) -> tuple[CellClass, ...]:
    """The classes of the checkpoint in `model_dir` (from its card), or the default taxonomy
    when no checkpoint is there yet."""
    card = card_in(model_dir)
    return tuple(card.cell_classes) if card else CLASSES
