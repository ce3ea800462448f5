"""Celery worker: a thin app whose tasks call app.processing (see worker/app.py)."""
