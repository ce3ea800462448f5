"""The Celery configuration both sides share (every option in one place), and enqueueing by
task name.

The web process sends tasks by name, so it never imports the worker's tasks (nor torch).
The broker only carries "process these cell ids"; the database is the source of truth.
"""
from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache

from celery import Celery
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport

from app.config import Settings

log = logging.getLogger(__name__)
PROCESS_CELLS = "marrow.process_cells"
RETRY_S = (2.0, 60.0)  # the first and the longest wait between two tries of an upload the broker refused
QUEUE = "marrow"


class EmbeddedTransport(SQLAlchemyTransport):
    """kombu's SQLAlchemy transport polling its table every 0.1 s instead of 1 s (it hands
    every transport option to create_engine, so the interval cannot be passed as one)."""

    polling_interval = 0.1


def celery_config(broker: str) -> dict:
    conf = {
        "broker_url": broker,
        "task_default_queue": QUEUE,
        "task_ignore_result": True,  # results live in the database
        "task_acks_late": True,  # a dead worker's batch is redelivered and redone
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # a worker holds only the batch it is working on
        "broker_connection_retry_on_startup": True,
        # Celery 6's default, said here so Celery does not warn at every reconnection (a solo
        # worker runs its task in the consumer's thread, so there is nothing to cancel anyway).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        # One process per machine (or GPU) holding one model; the model itself uses every core.
        "worker_pool": "solo",
    }
    if broker.startswith("sqla+"):
        conf["broker_url"] = broker.removeprefix("sqla+")
        conf["broker_transport"] = f"{__name__}:EmbeddedTransport"
        # kombu's SQLAlchemy transport hands these to create_engine: wait for SQLite's lock
        # (web and worker share the file) instead of failing at once.
        conf["broker_transport_options"] = {"connect_args": {"timeout": 30}}
    else:
        # Redis redelivers a task unacked this long (its worker died) to another worker. Must
        # exceed the longest task: `task_cells` cells take seconds on a GPU, ~15 s on 2 CPU cores.
        conf["broker_transport_options"] = {"visibility_timeout": 600}
    return conf


@lru_cache(maxsize=4)
def make_celery(broker: str) -> Celery:
    app = Celery("marrow")
    app.conf.update(celery_config(broker))
    return app


def enqueue_cells(settings: Settings, upload_id: int, cell_ids: list[int]) -> None:
    """One task per `task_cells` cells: the unit of parallelism across workers and of redo."""
    client = make_celery(settings.broker)
    step = settings.task_cells
    for i in range(0, len(cell_ids), step):
        client.send_task(PROCESS_CELLS, args=[upload_id, cell_ids[i:i + step]], queue=QUEUE)


def enqueue_until_queued(settings: Settings, upload_id: int, cell_ids: list[int]) -> None:
    """Queue an upload's cells; if the broker refuses them, keep trying in a background thread,
    with backoff, until it takes them. A worker requeues pending cells when it reconnects, but
    when only the web lost the broker (its own network, a failover the workers rode out) no
    worker reconnects, and the cells would wait for a worker restart."""
    try:
        enqueue_cells(settings, upload_id, cell_ids)
        return
    except Exception as exc:  # noqa: BLE001 - kombu and its transports raise their own kinds
        log.warning("could not queue upload %s (%s); retrying in the background", upload_id, exc)

    def retry() -> None:
        wait = RETRY_S[0]
        while True:
            time.sleep(wait)
            try:
                enqueue_cells(settings, upload_id, cell_ids)  # some may be done by then: processing skips them
            except Exception as exc:  # noqa: BLE001
                wait = min(2 * wait, RETRY_S[1])
                log.warning("upload %s still not queued (%s); next try in %.0f s", upload_id, exc, wait)
                continue
            log.info("upload %s queued after all", upload_id)
            return

    threading.Thread(target=retry, name=f"queue-upload-{upload_id}", daemon=True).start()
