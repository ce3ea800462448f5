"""Cases: creation, status and counts, the differential, sign-off."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session

from app.audit.models import AuditAction
from app.audit.service import record
from app.cases.models import Case, CaseStatus, Upload
from app.cells.models import IN_CASE, Cell, CellStatus
from app.db import get_or_not_found, utcnow
from app.errors import Conflict, Forbidden
from app.differential.indices import percents, summary_indices
from app.taxonomy import service as taxonomy
from app.taxonomy.defaults import UNK
from app.users.models import User


def create_case(session: Session, user: User, accession: str, specimen: str, note: str) -> Case:
    case = Case(accession=accession, specimen=specimen, note=note, created_by_id=user.id,
                categories=taxonomy.snapshot(session))
    session.add(case)
    session.commit()
    return case


def edit_case(session: Session, case: Case, user: User, changes: dict[str, str]) -> None:
    """Correct a case's accession, specimen or note before sign-off; each changed field is
    audited with its old and new value (a report must never carry a typo silently fixed)."""
    lock_case(session, case)
    ensure_open(case)
    for field, new in changes.items():
        old = getattr(case, field)
        if new == old:
            continue
        setattr(case, field, new)
        record(session, case_id=case.id, user_id=user.id, action=AuditAction.EDIT, from_value=old[:255],
               to_value=new[:255], detail={"field": field, "from": old, "to": new})
    session.commit()


def get_case(session: Session, case_id: int) -> Case:
    return get_or_not_found(session, Case, case_id, "case")


def list_uploads(session: Session, case_id: int) -> list[Upload]:
    """A case's uploads, oldest first."""
    return list(session.scalars(select(Upload).where(Upload.case_id == case_id).order_by(Upload.id)))


def get_upload(session: Session, upload_id: int) -> Upload:
    return get_or_not_found(session, Upload, upload_id, "upload")


def case_status(case: Case, total: int, processed: int) -> str:
    if case.signed_at is not None:
        return CaseStatus.SIGNED
    if total == 0:
        return CaseStatus.EMPTY
    return CaseStatus.PROCESSING if processed < total else CaseStatus.READY


def differential(shares: dict[str, dict]) -> dict[str, float]:
    """The API's `differential`: each counted category's percent (from `percents`) to two
    places, 0.0 before any cell is counted."""
    return {code: 0.0 if v["percent"] is None else round(v["percent"], 2) for code, v in shares.items()}


def _tallies(session: Session, case_ids: Sequence[int] | None) -> tuple[dict, dict]:
    """Per case: {"total", "processed"} and {label: n}, in two grouped queries (withdrawn cells
    are in neither)."""
    where = [IN_CASE, *([Cell.case_id.in_(case_ids)] if case_ids is not None else [])]
    progress: dict[int, dict[str, int]] = defaultdict(lambda: {"total": 0, "processed": 0})
    for case_id, cell_status, n in session.execute(
            select(Cell.case_id, Cell.status, func.count()).where(*where).group_by(Cell.case_id, Cell.status)):
        progress[case_id]["total"] += n
        if cell_status != CellStatus.PENDING:
            progress[case_id]["processed"] += n
    labels: dict[int, dict[str, int]] = defaultdict(dict)
    for case_id, label, n in session.execute(
            select(Cell.case_id, Cell.label, func.count()).where(Cell.label.is_not(None), *where)
            .group_by(Cell.case_id, Cell.label)):
        labels[case_id][label] = n
    return progress, labels


def summaries(session: Session, case_ids: Sequence[int] | None = None) -> list[dict]:
    """Every case (or those given) with status, progress, counts and differential, newest first.
    Each case is counted with its own category list."""
    query = select(Case, User.name).outerjoin(User, User.id == Case.signed_by_id).order_by(Case.id.desc())
    if case_ids is not None:
        query = query.where(Case.id.in_(case_ids))
    rows = session.execute(query).all()
    progress, labels = _tallies(session, case_ids)
    out = []
    for case, signer in rows:
        p, counts = progress[case.id], labels[case.id]
        categories = taxonomy.of_case(case.categories)
        full = {UNK: counts.get(UNK, 0), **{c.code: counts.get(c.code, 0) for c in categories}}
        full.update((code, n) for code, n in counts.items() if code not in full)  # none expected
        shares = percents(full, categories)
        out.append({
            "id": case.id, "accession": case.accession, "specimen": case.specimen, "note": case.note,
            "created_at": case.created_at, "status": case_status(case, p["total"], p["processed"]),
            "cells_total": p["total"], "cells_processed": p["processed"],
            "counts": full, "differential": differential(shares),
            "intervals": {code: [v["ci_low"], v["ci_high"]] for code, v in shares.items()},
            "indices": summary_indices(full, categories),
            "categories": [c.as_dict() for c in categories], "model_name": case.model_name,
            "signed_by": signer, "signed_at": case.signed_at, "sign_comment": case.sign_comment,
        })
    return out


def summary(session: Session, case_id: int) -> dict:
    get_case(session, case_id)
    return summaries(session, [case_id])[0]


def _has_status(status: str):
    """The SQL condition for case_status(): a list of years of cases is filtered by the database,
    not by counting every case's cells."""
    cells = exists().where(Cell.case_id == Case.id, IN_CASE)
    pending = exists().where(Cell.case_id == Case.id, IN_CASE, Cell.status == CellStatus.PENDING)
    open_ = Case.signed_at.is_(None)
    return {CaseStatus.SIGNED: Case.signed_at.is_not(None), CaseStatus.EMPTY: and_(open_, ~cells),
            CaseStatus.PROCESSING: and_(open_, pending), CaseStatus.READY: and_(open_, cells, ~pending)}[status]


def _matching(q: str, status: str | None):
    """Cases whose accession contains `q` (any case) and with this status."""
    query = select(Case.id)
    if q.strip():
        query = query.where(func.lower(Case.accession).contains(q.strip().lower(), autoescape=True))
    return query.where(_has_status(status)) if status else query


def find(session: Session, q: str = "", status: str | None = None, before: int | None = None,
         limit: int | None = None) -> list[int]:
    """Ids of the matching cases, newest first; `before`: only cases older than that id (the
    next page of a list)."""
    query = _matching(q, status).order_by(Case.id.desc()).limit(limit)
    return list(session.scalars(query if before is None else query.where(Case.id < before)))


def count(session: Session, q: str = "", status: str | None = None) -> int:
    return session.scalar(select(func.count()).select_from(_matching(q, status).subquery()))


def lock_case(session: Session, case: Case) -> None:
    """Serialise the writers of one case (uploads, sign-off) until commit, and re-read it.

    PostgreSQL locks the row. SQLite has no row locks: a no-op UPDATE of the row takes the
    database's write lock instead, so no other writer can commit between the checks that
    follow and this transaction's commit (a plain read there let an upload and a sign-off of
    the same case both succeed)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Case).where(Case.id == case.id).values(id=Case.id))
    else:
        session.execute(select(Case.id).where(Case.id == case.id).with_for_update())
    session.refresh(case)


def ensure_open(case: Case) -> None:
    if case.signed_at is not None:
        raise Conflict(f"case {case.id} is signed and locked")


def sign(session: Session, case: Case, user: User, signers: frozenset[str] | None = None,
         comment: str | None = None) -> None:
    """Lock the case, with the signer's comment for the report (blank: none). Refused while
    cells are still being processed or when already signed, and to a user whose role is not
    among `signers` (MARROW_SIGN_ROLES; None: any role)."""
    if signers is not None and user.role not in signers:
        raise Forbidden(f"only {' or '.join(sorted(signers))} accounts may sign a case off; "
                        f"{user.name} is a {user.role}")
    lock_case(session, case)  # waits for an upload into this case to commit: its cells count
    ensure_open(case)
    in_case = (Cell.case_id == case.id, IN_CASE)
    pending = session.scalar(select(func.count()).where(*in_case, Cell.status == CellStatus.PENDING))
    total = session.scalar(select(func.count()).where(*in_case))
    if not total or pending:
        raise Conflict(f"case {case.id} cannot be signed: {pending} of {total} cells still processing"
                       if total else f"case {case.id} has no cells")
    unidentified = session.scalar(select(func.count()).where(*in_case, Cell.label == UNK))
    if unidentified:
        raise Conflict(f"case {case.id} cannot be signed: {unidentified} unidentified cell"
                       f"{'s' * (unidentified != 1)} remain{'s' * (unidentified == 1)}; classify "
                       f"{'them' if unidentified != 1 else 'it'} first")
    done = session.execute(update(Case).where(Case.id == case.id, Case.signed_at.is_(None))
                           .values(signed_by_id=user.id, signed_at=utcnow(), sign_comment=comment or None))
    if done.rowcount != 1:  # signed by someone else since we looked
        session.rollback()
        raise Conflict(f"case {case.id} is signed and locked")
    record(session, case_id=case.id, user_id=user.id, action=AuditAction.SIGN, from_value="open", to_value="signed",
           detail={"comment": comment} if comment else None)
    session.commit()


def reopen(session: Session, case: Case, user: User, reason: str) -> None:
    """Unlock a signed case for a correction: by the user who signed it or an administrator,
    with a reason. The sign-off it undoes stays in the history with the reason, and the reports
    of the next sign-off say they amend it."""
    lock_case(session, case)
    if case.signed_at is None:
        raise Conflict(f"case {case.id} is not signed")
    if user.role != "admin" and user.id != case.signed_by_id:
        raise Forbidden(f"only the user who signed case {case.id} or an administrator can reopen it")
    signer = session.get(User, case.signed_by_id) if case.signed_by_id is not None else None
    record(session, case_id=case.id, user_id=user.id, action=AuditAction.REOPEN, from_value="signed",
           to_value="open", detail={"reason": reason, "signed_by": signer.name if signer else None,
                                    "signed_at": case.signed_at.isoformat(), "comment": case.sign_comment})
    case.signed_at, case.signed_by_id, case.sign_comment = None, None, None
    session.commit()
