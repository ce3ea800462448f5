"""Read and replace the lab's list; a case's own list (its snapshot)."""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.errors import DomainError
from app.taxonomy.defaults import DEFAULT_CATEGORIES, UNK, Category, validate
from app.taxonomy.models import LabCategory


class InvalidCategories(DomainError):
    status_code = 422


def lab_categories(session: Session) -> tuple[Category, ...]:
    """The current list (the default one when the table is empty)."""
    rows = session.scalars(select(LabCategory).order_by(LabCategory.position, LabCategory.id)).all()
    if not rows:
        return DEFAULT_CATEGORIES
    return tuple(Category(r.code, r.name, r.key, r.counted, r.lineage or "") for r in rows)


def listing(categories: tuple[Category, ...], model_classes) -> list[dict]:
    """The list as the API answers it and the admin page shows it: which codes the model predicts."""
    model_codes = {c.code for c in model_classes}
    return [{**c.as_dict(), "predicted_by_model": c.code in model_codes} for c in categories]


def replace(session: Session, categories: list[Category]) -> tuple[Category, ...]:
    """Validate and store a whole new list (one transaction). Cases keep their snapshots."""
    if errors := validate(categories):
        raise InvalidCategories("; ".join(errors))
    session.execute(delete(LabCategory))
    session.flush()
    session.add_all(LabCategory(position=i, code=c.code, name=c.name.strip(), key=c.key, counted=c.counted,
                                lineage=c.lineage) for i, c in enumerate(categories))
    session.commit()
    return lab_categories(session)


def snapshot(session: Session) -> list[dict]:
    """What a new case stores as its list."""
    return [c.as_dict() for c in lab_categories(session)]


def of_case(stored: list | None) -> tuple[Category, ...]:
    """A case's list from its `categories` column (the default list for a case that has none)."""
    return tuple(Category.from_dict(d) for d in stored) if stored else DEFAULT_CATEGORIES


def assignable(categories: tuple[Category, ...]) -> set[str]:
    """Labels a reviewer may set: the case's categories, and UNK (to put a cell back, e.g. undo)."""
    return {c.code for c in categories} | {UNK}


def with_current_keys(categories: tuple[Category, ...], lab: tuple[Category, ...]) -> tuple[Category, ...]:
    """The case's categories with the keys the administrator maps now (keys are the review
    page's, not the case's data); a code the lab no longer lists keeps its key unless taken."""
    current = {c.code: c.key for c in lab}
    taken = {current[c.code] for c in categories if c.code in current}
    out = []
    for c in categories:
        key = current.get(c.code) or (c.key if c.key not in taken else "")
        out.append(Category(c.code, c.name, key, c.counted, c.lineage))
    return tuple(out)
