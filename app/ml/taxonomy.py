"""The seven-class bone-marrow taxonomy: the single place class codes and names live.

Every checkpoint stores the classes it was trained with; the web app reads them from the
loaded model, and this module is the default for new models.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellClass:
    code: str
    name: str
    counted: bool  # counted in the differential's percent denominator
    key: str  # keyboard shortcut on the review page


CLASSES: tuple[CellClass, ...] = (
    CellClass("BLA", "Blast", True, "b"),
    CellClass("EOS", "Eosinophil", True, "e"),
    CellClass("LYT", "Lymphocyte", True, "l"),
    CellClass("MON", "Monocyte", True, "m"),
    CellClass("NGS", "Segmented neutrophil", True, "n"),
    CellClass("NIF", "Not identifiable", False, "x"),
    CellClass("PMO", "Promyelocyte", True, "p"),
)

CODES: tuple[str, ...] = tuple(c.code for c in CLASSES)
BY_CODE: dict[str, CellClass] = {c.code: c for c in CLASSES}


def get(code: str) -> CellClass:
    """The class for a code; KeyError names the unknown code and the valid ones."""
    try:
        return BY_CODE[code]
    except KeyError:
        raise KeyError(f"unknown class code {code!r}; expected one of {', '.join(CODES)}") from None
