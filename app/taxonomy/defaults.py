"""The default list (ICSH 2008 bone-marrow differential, Lee et al., Int J Lab Hematol
30:349-364) and the rules every list must follow. Torch-free and database-free."""
from __future__ import annotations

import re
from dataclasses import dataclass

UNK = "UNK"  # cells the pipeline would not name: shown first, in no percentage, block sign-off
UNK_NAME = "Unidentified"
# Lineages the indices (app.differential.indices) are defined over; "" = none.
LINEAGES = ("myeloid", "erythroid", "lymphoid", "monocytic", "plasma", "megakaryocytic", "other", "")
# Review-page keys with another meaning (select group, Grad-CAM, undo).
RESERVED_KEYS = frozenset("agz")
CODE_RE = re.compile(r"^[A-Z][A-Z0-9]{1,7}$")
KEY_RE = re.compile(r"^[a-z0-9]$")


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    key: str  # review-page key
    counted: bool  # in the percent denominator
    lineage: str = ""

    def as_dict(self) -> dict:
        return dict(vars(self))  # flat: dataclasses.asdict's recursive copy took a third of the case list's time

    @classmethod
    def from_dict(cls, d: dict) -> Category:
        return cls(d["code"], d["name"], d.get("key", ""), bool(d.get("counted", True)), d.get("lineage", "") or "")


# Keys of the seven-class model's codes are unchanged (b e l m n x p), so reviewers keep their habits.
DEFAULT_CATEGORIES: tuple[Category, ...] = (
    Category("BLA", "Blast", "b", True, "myeloid"),
    Category("PMO", "Promyelocyte", "p", True, "myeloid"),
    Category("MYB", "Myelocyte", "y", True, "myeloid"),
    Category("MMZ", "Metamyelocyte", "t", True, "myeloid"),
    Category("NGB", "Band neutrophil", "d", True, "myeloid"),
    Category("NGS", "Segmented neutrophil", "n", True, "myeloid"),
    Category("EOS", "Eosinophil", "e", True, "myeloid"),
    Category("BAS", "Basophil", "s", True, "myeloid"),
    Category("MON", "Monocyte", "m", True, "monocytic"),
    Category("LYT", "Lymphocyte", "l", True, "lymphoid"),
    Category("PLM", "Plasma cell", "c", True, "plasma"),
    Category("EBO", "Erythroblast", "r", True, "erythroid"),
    Category("OTH", "Other nucleated cell", "o", True, "other"),
    Category("NIF", "Not identifiable", "x", False, ""),
    Category("PLT", "Platelet", "k", False, "megakaryocytic"),
    Category("ART", "Artefact", "f", False, ""),
)


def validate(categories: list[Category]) -> list[str]:
    """Every problem with a list, each naming the row and value (empty when valid)."""
    errors: list[str] = []
    if not categories:
        return ["the list is empty"]
    if not any(c.counted for c in categories):
        errors.append("no category is counted: percentages would have no denominator")
    seen_codes: dict[str, int] = {}
    seen_keys: dict[str, int] = {}
    for i, c in enumerate(categories, 1):
        where = f"row {i} ({c.code or 'no code'})"
        if c.code == UNK:
            errors.append(f"{where}: {UNK} is reserved for unidentified cells")
        elif not CODE_RE.match(c.code):
            errors.append(f"{where}: code {c.code!r} must be 2-8 capital letters or digits, starting with a letter")
        if not c.name.strip() or len(c.name) > 80:
            errors.append(f"{where}: name must be 1-80 characters")
        if not KEY_RE.match(c.key):
            errors.append(f"{where}: key {c.key!r} must be one lower-case letter or digit")
        elif c.key in RESERVED_KEYS:
            errors.append(f"{where}: key {c.key!r} is reserved (A selects a group, G Grad-CAM, Z undo)")
        if c.lineage not in LINEAGES:
            errors.append(f"{where}: lineage {c.lineage!r} must be one of {', '.join(x or '(none)' for x in LINEAGES)}")
        if c.code in seen_codes:
            errors.append(f"{where}: code {c.code} repeats row {seen_codes[c.code]}")
        seen_codes.setdefault(c.code, i)
        if c.key in seen_keys:
            errors.append(f"{where}: key {c.key!r} repeats row {seen_keys[c.key]}")
        seen_keys.setdefault(c.key, i)
    return errors
