"""The Celery app (`celery -A worker.app worker`, or `marrow worker`) and its one task.

One Processor (and so one loaded model) per worker process, created when the worker starts so
the first batch does not pay for loading the model. Every connection to the broker, the first
and each one after an outage, requeues the pending cells; a task that meets the database down,
or image storage it cannot write (full, read-only) or that holds none of its images (not the
web's folder), is retried until it is back.
"""
from __future__ import annotations

import json
import logging

from celery import bootsteps
from celery.exceptions import WorkerShutdown
from celery.signals import worker_ready, worker_shutdown
from kombu.exceptions import OperationalError as BrokerUnavailable
from sqlalchemy.exc import OperationalError, TimeoutError as PoolTimeout

from app.config import get_settings
from app.db import driver_reason
from app.errors import StorageFailed
from app.processing.runtime import forget_gone, remove_report, start_heartbeat, write_report
from app.processing.service import Processor, requeue_pending
from app.queue import PROCESS_CELLS, make_celery

log = logging.getLogger(__name__)
settings = get_settings()
celery = make_celery(settings.broker)  # every option: app.queue.celery_config
RETRY_MAX_S = 10  # a task that met the database down, or storage it cannot write, retries at most this far apart
_processor: Processor | None = None


def processor() -> Processor:
    global _processor
    if _processor is None:
        _processor = Processor(settings)
        info = _processor.predictor.describe()
        check = info.get("check") or {}
        log.info("model %s loaded on %s: backend %s, precision %s (asked: %s); CPU flags %s; check on %s "
                 "probe cells against fp32: top-1 agreement %s, max probability difference %s%s",
                 info["version"], settings.device, info["backend"], info["precision"], info["requested"],
                 " ".join(info["cpu_flags"]) or "-", check.get("cells", 0), check.get("top1_agreement"),
                 check.get("max_prob_diff"),
                 f"; fell back: {info['fallback_reason']}" if info.get("fallback_reason") else "")
        log.info("inference selection: %s", json.dumps(info, default=str))
        try:
            if forgotten := forget_gone(settings):
                log.info("removed the runtime reports of %d workers silent for over a week", forgotten)
            write_report(settings, info)
            start_heartbeat(settings)
        except OSError:
            log.exception("could not write the worker's runtime report")
    return _processor


@worker_shutdown.connect
def _on_shutdown(**_kwargs) -> None:
    remove_report(settings)


@worker_ready.connect
def _on_ready(**_kwargs) -> None:
    """Load the model before the first task; a worker that cannot (no model, a device it was
    told to use and does not have) stops with exit code 1 instead of taking cells it would
    fail, as `marrow run` stops a web server whose uploads would never be processed."""
    try:
        processor()
    except Exception as exc:  # noqa: BLE001 - whatever the reason, this worker cannot classify
        log.critical("the worker cannot load its model, so it stops: %s", exc, exc_info=True)
        raise WorkerShutdown(1) from exc


class RequeueOnConnect(bootsteps.StartStopStep):
    """Requeue every pending cell each time the worker connects to the broker: when it starts
    (a worker killed on the embedded broker left its cells unqueued), and again after each
    broker outage (the cells the web could not queue meanwhile, the messages Redis lost)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c) -> None:
        try:
            requeue_pending(settings)
        except (OperationalError, BrokerUnavailable, PoolTimeout) as exc:
            # The database or broker down, full or read-only (kombu's pool runs dry after a few dozen
            # failed tries). The consumer reconnects several times a second meanwhile, so the
            # reason in one line, not a hundred lines of traceback each time.
            log.error("could not requeue the pending cells, the next connection tries again: %s", driver_reason(exc))
        except Exception:  # noqa: BLE001 - the worker goes on; the next (re)connection requeues
            log.exception("could not requeue the pending cells")


celery.steps["consumer"].add(RequeueOnConnect)


@celery.task(name=PROCESS_CELLS, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(OperationalError, StorageFailed), retry_backoff=True, retry_backoff_max=RETRY_MAX_S,
             max_retries=None)
def process_cells(upload_id: int, cell_ids: list[int]) -> int:
    try:
        return processor().process(upload_id, cell_ids)
    except StorageFailed as exc:  # said at warning level on every try, then retried like a database outage
        log.warning("upload %s: %s; its cells stay queued and are retried", upload_id, exc)
        raise
