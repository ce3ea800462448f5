"""GET /api/model-info: the configured model and what each worker runs it on."""
from __future__ import annotations

from fastapi import APIRouter

from app.deps import CurrentUser, SettingsDep
from app.ml.card import card_in
from app.processing.runtime import read_reports

router = APIRouter(prefix="/api", tags=["models"])


@router.get("/model-info")
def model_info(settings: SettingsDep, _user: CurrentUser) -> dict:
    """The configured model (version, classes) and, per worker that has loaded it, the inference
    backend the worker chose for its CPU, its precision, the CPU's flags and the load-time check
    on the probe cells (top-1 agreement and largest probability difference against fp32)."""
    card = card_in(settings.model_dir)
    return {"model_dir": str(settings.model_dir), "version": card.version if card else None,
            "classes": card.codes if card else [], "device": settings.device,
            "backend_setting": settings.backend, "workers": read_reports(settings)}
