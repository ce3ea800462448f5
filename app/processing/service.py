"""The worker's job: run the ML pipeline over pending cells and record the results.

Idempotent per cell: only cells still `pending` are processed; a prediction row is unique per
(cell, model version) and written only if absent; the model's label is set only where no
label exists (a reviewer's label is never overwritten); thumbnails are named by content hash,
so rewriting one rewrites the same bytes, and the Grad-CAM map goes into the cell's row (the
web app draws the overlay from it, app.cells.overlays). A task that runs twice, or two workers
racing on the same cells, therefore leave exactly one cell and one prediction each.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import cv2
import numpy as np
from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.audit.models import AuditAction
from app.audit.service import record
from app.cases.models import Case, Upload, UploadStatus
from app.cells.models import Cell, CellStatus, LabelSource, Prediction
from app.cells.overlays import stored_heatmap
from app.config import Settings
from app.db import make_engine, make_sessionmaker, utcnow
from app.errors import StorageFailed
from app.ml import encode
from app.ml.pipeline import DEFAULT_BATCH_SIZE, CellResult, batches, run
from app.ml.predictor import Prediction as PipelinePrediction
from app.ml.predictor import Predictor
from app.ml.quality import Thresholds
from app.queue import enqueue_cells
from app.rerun.models_dir import model_path
from app.storage import Storage
from app.taxonomy.defaults import UNK
from app.taxonomy.service import of_case

log = logging.getLogger(__name__)
# Cells per transaction and progress step: each transaction costs a few milliseconds of
# statements and a commit whatever its size, which at 4 cells (a network batch) was ~1 ms a cell.
WRITE_CELLS = 32
WRITE_TAIL = 8  # the last cells of a task are written on their own: what is left once the network is done
THUMBNAIL_SIDE = 112  # px: shown at 84 px; half of QC's 224-px view, a fast exact 2:1 reduction


def thumbnail_jpeg(rgb: np.ndarray, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG of `rgb` with its long side at most `side` (from the QC view: see CellResult.view)."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return encode.jpeg(rgb, quality=85)


class Processor:
    """One per worker process: holds the loaded model, thresholds, storage and database."""

    def __init__(self, settings: Settings, predictor: Predictor | None = None):
        self.settings = settings
        self.storage = Storage(settings.storage_path)
        self.sessions: sessionmaker[Session] = make_sessionmaker(make_engine(settings.db_url))
        self.thresholds = Thresholds.load()
        self.batch_size = settings.batch_size or DEFAULT_BATCH_SIZE[settings.device]
        self.predictor = predictor or Predictor(settings.model_dir, device=settings.device,
                                                backend=settings.backend, cache_dir=settings.model_cache)
        self._predictors: dict[str | None, Predictor] = {None: self.predictor}

    def predictor_for(self, model_name: str | None) -> Predictor:
        """The configured model, or another of the models folder a re-run chose (loaded once)."""
        if model_name not in self._predictors:
            self._predictors[model_name] = Predictor(model_path(self.settings, model_name),
                                                     device=self.settings.device, backend=self.settings.backend,
                                                     cache_dir=self.settings.model_cache)
        return self._predictors[model_name]

    def process(self, upload_id: int, cell_ids: list[int]) -> int:
        """Process those of `cell_ids` still pending; returns how many were processed now."""
        with self.sessions() as session:
            cells = session.execute(select(Cell.id, Cell.sha256, Cell.filename, Cell.image_path)
                                    .where(Cell.id.in_(cell_ids), Cell.status == CellStatus.PENDING)
                                    .order_by(Cell.id)).all()
            case = session.execute(select(Case.id, Case.model_name, Case.categories)
                                   .join(Upload, Upload.case_id == Case.id).where(Upload.id == upload_id)).one_or_none()
        self._ensure_storage_holds(cells)
        predictor = self.predictor_for(case.model_name if case else None)
        context = _CaseContext(case.id if case else None, {c.code for c in of_case(case.categories if case else None)},
                               predictor)
        items = [(c.filename, partial(self.storage.read, c.image_path)) for c in cells]
        results = run(items, predictor, self.thresholds, repair=self.settings.repair, with_cam=True,
                      batch_size=self.batch_size, upload_checked=True, keep_image=False)  # stored: checked
        # WRITE_CELLS cells are written (files, rows, progress) in a thread while the next are in the model.
        with ThreadPoolExecutor(max_workers=1) as writer:
            pending = None
            for batch in batches(zip(cells, results), WRITE_CELLS, len(cells), tail=WRITE_TAIL, tail_n=WRITE_TAIL):
                if pending is not None:
                    pending.result()
                pending = writer.submit(self._record, upload_id, batch, context)
            if pending is not None:
                pending.result()
        if not cells:
            with self.sessions() as session:
                _refresh_upload(session, upload_id)
                session.commit()
        return len(cells)

    def _ensure_storage_holds(self, cells: list) -> None:
        """One image gone from the storage fails its cell alone, but none of a task's images there
        means this worker is not looking where the web stored them (MARROW_STORAGE_DIR not the
        same folder on every machine, a mount missing): StorageFailed, so the task is retried and
        no cell is failed as unreadable while it is fixed."""
        if cells and not any(self.storage.path(c.image_path).is_file() for c in cells):
            raise StorageFailed(f"none of the {len(cells)} images of this task is in the image storage "
                                f"{self.storage.root} (the first: {cells[0].image_path}): every web and worker "
                                f"must see the same MARROW_STORAGE_DIR")

    def _record(self, upload_id: int, batch: list, context: _CaseContext) -> None:
        files = [self._write_files(c.sha256, r, context.predictor) for c, r in batch]
        self._save(upload_id, [(c.id, r) for c, r in batch], files, context)

    def _write_files(self, digest: str, r: CellResult, predictor: Predictor) -> tuple[str | None, str | None]:
        if r.prediction is None:
            return None, None
        thumb = self.storage.thumbnail_key(digest)
        try:
            self.storage.put(thumb, thumbnail_jpeg(r.view))
        except OSError as exc:  # the task is retried (worker.app): the cells stay pending, none is lost
            raise StorageFailed(f"could not write a thumbnail to the image storage {self.storage.root}: "
                                f"{exc.strerror or exc}") from exc
        return thumb, self.storage.overlay_key(digest, predictor.version)  # drawn when first opened

    def _save(self, upload_id: int, batch: list[tuple[int, CellResult]],
              files: list[tuple[str | None, str | None]], context: _CaseContext) -> None:
        """One transaction per batch, with the upload's progress; a unique-constraint race with
        another worker retries once, then finds the prediction present and only completes the cell."""
        for attempt in (1, 2):
            with self.sessions() as session:
                try:
                    _save_batch(session, batch, files, context)
                    _refresh_upload(session, upload_id)
                    session.commit()
                    return
                except IntegrityError:
                    session.rollback()
                    if attempt == 2:
                        raise


def _save_batch(session: Session, batch: list[tuple[int, CellResult]],
                files: list[tuple[str | None, str | None]], context: _CaseContext) -> None:
    """A batch's results in a few statements each run over all its cells (executemany): what
    the cells already have, their new predictions, their status, their first model labels."""
    predictor = context.predictor
    version, codes = predictor.version, [c.code for c in predictor.classes]
    known = _Known.read(session, [cell_id for cell_id, _ in batch], version)
    failed, done, predictions, first_labels, relabels = [], [], [], [], []
    for (cell_id, r), (thumb, overlay) in zip(batch, files):
        row = {"id": cell_id, "quality_flags": list(r.quality.flags),
               "quality": {k: v for k, v in r.quality.as_dict().items()
                           if k in ("brightness", "stain_fraction", "blur_variance", "color_type", "repaired")}}
        p = r.prediction
        if p is None:
            failed.append({**row, "status": CellStatus.FAILED, "error": r.error})
            continue
        done.append({**row, "status": CellStatus.DONE, "error": None, "thumbnail_path": thumb, "overlay_path": overlay,
                     "gradcam": stored_heatmap(p.cam, r.cam_box)})
        label, unidentified = product_label(p, context.codes)
        exists = known.this_version.get(cell_id)
        if exists is not None and exists != known.newest.get(cell_id):
            # a re-run back to an earlier model: it is the newest again
            session.execute(delete(Prediction).where(Prediction.id == exists))
            exists = None
        if exists is None:
            predictions.append({"cell_id": cell_id, "model_version": version, "predicted": p.code,
                                "probability": p.probability, "unidentified": unidentified,
                                "probs": {c: round(float(q), 6) for c, q in zip(codes, p.probs)},
                                "top3": [{"code": c, "name": name, "p": round(q, 6)} for c, name, q in p.top3]})
        labelled = {"b_id": cell_id, "b_label": label, "b_at": utcnow()}
        if known.labels.get(cell_id) is None:
            first_labels.append(labelled)
        else:
            relabels.append((labelled, unidentified))
    if predictions:
        session.execute(insert(Prediction), predictions)
    for rows in (failed, done):
        if rows:
            session.execute(update(Cell), rows)  # by primary key, one executemany
    if first_labels:
        session.execute(_MODEL_LABEL, first_labels)
    for labelled, unidentified in relabels:  # re-runs: audited one by one
        if session.execute(_MODEL_LABEL, labelled).rowcount and context.case_id is not None:
            record(session, case_id=context.case_id, cell_id=labelled["b_id"], user_id=None,
                   action=AuditAction.MODEL_LABEL, from_value=known.labels[labelled["b_id"]],
                   to_value=labelled["b_label"], detail={"model_version": version, "unidentified": unidentified})


# The model's label where no label exists or the model set it (a re-run); a reviewer's label is
# never overwritten. The condition is in the statement, so a reviewer who labelled the cell
# since the batch was read still wins.
_cells = Cell.__table__
_MODEL_LABEL = (
    update(_cells)
    .where(_cells.c.id == bindparam("b_id"),
           or_(_cells.c.label.is_(None),
               and_(_cells.c.label_source == LabelSource.MODEL, _cells.c.label != bindparam("b_label"))))
    .values(label=bindparam("b_label"), label_source=LabelSource.MODEL, label_at=bindparam("b_at"), version=_cells.c.version + 1)
)


def _refresh_upload(session: Session, upload_id: int) -> None:
    """Progress is a recount (not an increment), so redone work never double-counts. The
    upload's row is locked before counting: two workers finishing its last cells at once then
    count one after the other's commit, and the second writes the full count. Counted first,
    each saw only its own cells and the upload stayed `processing` below its total
    (PostgreSQL; SQLite lets one writer in at a time, and ignores the lock)."""
    session.execute(select(Upload.id).where(Upload.id == upload_id).with_for_update())
    done, total = session.execute(select(func.count().filter(Cell.status != CellStatus.PENDING), func.count())
                                  .where(Cell.upload_id == upload_id)).one()
    session.execute(update(Upload).where(Upload.id == upload_id).values(
        cells_done=done, status=UploadStatus.DONE if done >= total else UploadStatus.PROCESSING))


@dataclass(frozen=True)
class _Known:
    """What a batch's cells already have, read in two queries at the start of its transaction:
    each cell's prediction id for this model version, its newest prediction id, its label."""

    this_version: dict[int, int]
    newest: dict[int, int]
    labels: dict[int, str | None]

    @classmethod
    def read(cls, session: Session, cell_ids: list[int], version: str) -> _Known:
        this_version, newest = {}, {}
        for cell_id, pred_id, model_version in session.execute(
                select(Prediction.cell_id, Prediction.id, Prediction.model_version)
                .where(Prediction.cell_id.in_(cell_ids)).order_by(Prediction.id)):
            newest[cell_id] = pred_id
            if model_version == version:
                this_version[cell_id] = pred_id
        labels = dict(session.execute(select(Cell.id, Cell.label).where(Cell.id.in_(cell_ids))).all())
        return cls(this_version, newest, labels)


class _CaseContext:
    """What saving a batch needs to know about its case: id, its category codes, the model."""

    def __init__(self, case_id: int | None, codes: set[str], predictor: Predictor):
        self.case_id, self.codes, self.predictor = case_id, codes, predictor


def product_label(p: PipelinePrediction, codes: set[str]) -> tuple[str, str | None]:
    """The label the product counts for a prediction and, for UNK, why: the pipeline's
    (`Prediction.label`/`unidentified`), and UNK for a class the case's list does not have
    (a lab that removed a category still never counts a cell silently)."""
    label, reason = p.label, p.unidentified
    if label != UNK and label not in codes:
        return UNK, f"class {label} is not in the case's category list"
    return label, reason if label == UNK else None


def requeue_pending(settings: Settings) -> int:
    """Enqueue every cell still pending (after a broker outage, or a worker killed on the
    embedded broker, which does not redeliver). Redone work is harmless: see the module doc."""
    engine = make_engine(settings.db_url)
    try:
        with make_sessionmaker(engine)() as session:
            rows = session.execute(select(Cell.upload_id, Cell.id).where(Cell.status == CellStatus.PENDING)
                                   .order_by(Cell.upload_id, Cell.id)).all()
    finally:
        engine.dispose()  # called on every connection to the broker: no pool left behind each time
    by_upload: dict[int, list[int]] = {}
    for upload_id, cell_id in rows:
        by_upload.setdefault(upload_id, []).append(cell_id)
    for upload_id, ids in by_upload.items():
        enqueue_cells(settings, upload_id, ids)
    if rows:
        log.info("requeued %d pending cells of %d uploads", len(rows), len(by_upload))
    return len(rows)
