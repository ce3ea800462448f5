from __future__ import annotations

from pydantic import BaseModel, Field


class Top(BaseModel):
    code: str
    name: str
    p: float


class CellOut(BaseModel):
    id: int
    filename: str
    status: str  # a CellStatus value: pending | done | failed
    predicted: str | None
    probability: float | None
    top3: list[Top]
    label: str | None
    label_source: str | None  # a LabelSource value: model | reviewer
    version: int
    quality_flags: list[str]
    quality: dict | None  # brightness, stain_fraction, blur_variance, color_type, repaired
    model_version: str | None
    unidentified: str | None = None  # why the pipeline left the cell UNK ("low confidence", ...)


class Relabel(BaseModel):
    label: str = Field(description="a category code of the case's list (or UNK)")
    version: int | None = Field(None, description="the version you saw; stale -> 409")
