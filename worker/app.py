"""The Celery app (`celery -A worker.app worker`, or `marrow worker`) and its one task.

One Processor (and so one loaded model) per worker process, created when the worker starts so
the first batch does not pay for loading the model.
"""
from __future__ import annotations

import logging

from celery.signals import worker_ready

from app.config import get_settings
from app.processing.service import Processor, requeue_pending
from app.queue import PROCESS_CELLS, make_celery

log = logging.getLogger(__name__)
settings = get_settings()
celery = make_celery(settings.broker)
# One process per machine (or GPU) holding one model; the model itself uses every core.
celery.conf.worker_pool = "solo"
_processor: Processor | None = None


def processor() -> Processor:
    global _processor
    if _processor is None:
        _processor = Processor(settings)
        log.info("model %s loaded on %s (%s)", _processor.predictor.version, settings.device,
                 _processor.predictor.backend)
    return _processor


@worker_ready.connect
def _on_ready(**_kwargs) -> None:
    processor()
    requeue_pending(settings)


@celery.task(name=PROCESS_CELLS, acks_late=True, reject_on_worker_lost=True)
def process_cells(upload_id: int, cell_ids: list[int]) -> int:
    return processor().process(upload_id, cell_ids)
