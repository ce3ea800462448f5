"""What the review screen shows, built from the cells and cases services' rows: cells grouped
by class (as on a CellaVision screen), sorted and filtered, and the differential panel."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.cells.models import CellStatus
from app.cells.service import view
from app.differential.indices import BLAST_CODE, BLAST_MARKS, TARGETS, compute
from app.taxonomy.defaults import UNK, UNK_NAME, Category
from app.taxonomy.service import lab_categories, of_case, with_current_keys

BLAST_SCALE = 40  # the blast bar spans 0-40 %; above that it is simply full
LOW_CONFIDENCE = 0.6
SORTS = {"confidence": "low confidence first", "upload": "upload order"}
FILTERS = {"all": "all cells", "low": f"confidence < {LOW_CONFIDENCE:.0%}",
           "flagged": "quality-flagged", "changed": "changed by a reviewer"}


@dataclass
class Group:
    code: str
    name: str
    key: str
    tiles: list[dict] = field(default_factory=list)


def tile(row) -> dict:
    """One cell as the gallery shows it: the cells service's view of a row of
    app.cells.service.rows, its quality flags also as `flags`."""
    t = view(row)
    t["flags"] = t["quality_flags"]
    return t


def _keep(t: dict, what: str) -> bool:
    if what == "low":
        return t["probability"] is not None and t["probability"] < LOW_CONFIDENCE
    if what == "flagged":
        return bool(t["flags"])
    if what == "changed":
        return t["changed"]
    return True


def gallery(rows, categories: tuple[Category, ...], sort: str, what: str) -> list[Group]:
    """Every category's group (empty ones too, so the layout never jumps), then cells still
    processing and cells that could not be read. Each tile's `rank` is its place in the
    sort order, which the page's script uses to put a relabelled cell where it belongs."""
    rows = list(rows)
    tiles = [t for t in map(tile, rows) if _keep(t, what)]
    if sort == "confidence":
        tiles.sort(key=lambda t: (t["probability"] is None, t["probability"] or 0.0, t["id"]))
    # The unidentified group first, whenever the case has such cells (a case without any shows
    # the category groups only, as before).
    unidentified = {UNK: Group(UNK, UNK_NAME, "")} if any(row.label == UNK for row in rows) else {}
    groups = {**unidentified, **{c.code: Group(c.code, c.name, c.key) for c in categories}}
    pending, failed = Group(CellStatus.PENDING, "Processing", ""), Group(CellStatus.FAILED, "Unreadable", "")
    for rank, t in enumerate(tiles):
        t["rank"] = rank
        group = groups.get(t["label"]) if t["label"] else (failed if t["status"] == CellStatus.FAILED else pending)
        (group or failed).tiles.append(t)
    return [*groups.values(), *(g for g in (pending, failed) if g.tiles)]


def case_categories(db: Session, case: dict) -> tuple[Category, ...]:
    """A case's own category list, with the keys the administrator maps now."""
    return with_current_keys(of_case(case.get("categories")), lab_categories(db))


def panel(case: dict, categories: tuple[Category, ...], target: int) -> dict:
    """The differential panel from a case summary (app.cases.service.summary): UNK first, every
    category with its percent and exact 95 % interval, the ratios, progress to the target."""
    counted = sum(case["counts"].get(c.code, 0) for c in categories if c.counted)
    blast = case["differential"].get(BLAST_CODE)
    intervals = case.get("intervals", {})
    return {
        "case_id": case["id"], "status": case["status"], "target": target, "targets": TARGETS,
        "counted": counted, "progress": min(100.0, 100.0 * counted / target),
        "unidentified": case["counts"].get(UNK, 0),
        "rows": [{"code": c.code, "name": c.name, "key": c.key, "counted": c.counted,
                  "count": case["counts"].get(c.code, 0), "percent": case["differential"].get(c.code),
                  "ci": intervals.get(c.code)}
                 for c in categories],
        "indices": [ix for ix in compute(case["counts"], categories) if ix["code"] != "blast_percent"],
        "blast": blast, "blast_width": min(100.0, 100.0 * (blast or 0.0) / BLAST_SCALE),
        "marks": [{"at": m, "left": 100.0 * m / BLAST_SCALE} for m in BLAST_MARKS],
        "blast_level": None if blast is None else sum(blast >= m for m in BLAST_MARKS),
    }


def target_or_default(target: int) -> int:
    return target if target in TARGETS else TARGETS[0]


def parse_items(text: str, codes: set[str]) -> list[tuple[int, int, str]]:
    """`id:version:label,...` from the page's script -> [(cell id, version seen, new label)]."""
    items = []
    for part in filter(None, text.split(",")):
        cell_id, version, label = part.split(":")
        if label not in codes:
            raise ValueError(f"unknown class {label!r}")
        items.append((int(cell_id), int(version), label))
    if not items:
        raise ValueError("no cells given")
    return items
