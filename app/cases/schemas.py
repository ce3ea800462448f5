from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

COMMENT_MAX = 4000  # characters: a report's interpretive comment, not a narrative
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]


def _one_line(text: str) -> str:
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise ValueError("must be one line, without tabs or other control characters")
    return text


OneLine = Annotated[str, AfterValidator(_one_line)]  # an accession or specimen: CSV headers, PDF, FHIR, LIS
EditedLine = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120),
                       AfterValidator(_one_line)]


class CaseCreate(BaseModel):
    accession: OneLine = Field(min_length=1, max_length=120, description="accession / patient identifier")
    specimen: OneLine = Field("bone marrow", min_length=1, max_length=120)
    note: str = Field("", max_length=10_000)


class CaseEdit(BaseModel):
    """The fields to change (the others are left as they are)."""

    accession: EditedLine | None = None
    specimen: EditedLine | None = None
    note: str | None = Field(None, max_length=10_000)


class CaseReopen(BaseModel):
    reason: Reason = Field(description="why the signed case is reopened (kept in its history and on the reports)")


class CaseSign(BaseModel):
    comment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=COMMENT_MAX)] | None = Field(
        None, description="the signer's comment for the report: interpretation, advice (PDF and FHIR conclusion)")


class UploadWithdraw(BaseModel):
    reason: Reason = Field(description="why its cells are taken out of the case (kept in its history)")


class CaseOut(BaseModel):
    id: int
    accession: str
    specimen: str
    note: str
    created_at: datetime
    status: str  # a CaseStatus value: empty | processing | ready | signed
    cells_total: int
    cells_processed: int
    counts: dict[str, int]  # current label -> cells: UNK (unidentified) first, then the case's categories
    differential: dict[str, float]  # counted category -> percent (UNK and not-counted ones out of the denominator)
    intervals: dict[str, list[float | None]]  # counted category -> [low, high] percent, exact binomial 95 %
    indices: dict[str, float | int | None]  # blast_percent, me_ratio, counted_total, ... (app.differential)
    categories: list[dict]  # the list this case is counted with (snapshot at creation)
    model_name: str | None  # the model chosen by a re-run; None = the configured one
    signed_by: str | None
    signed_at: datetime | None
    sign_comment: str | None = None  # the signer's comment (None before sign-off and after reopening)


class Rejected(BaseModel):
    file: str
    reason: str


class Accepted(BaseModel):
    file: str
    cell_id: int
    duplicate: bool  # the case already had this image: it is the same cell


class UploadOut(BaseModel):
    upload_id: int
    accepted: list[Accepted]
    rejected: list[Rejected]


class UploadStatus(BaseModel):
    id: int
    case_id: int
    status: str  # an UploadStatus value: queued | processing | done
    cells_total: int
    cells_done: int
    accepted: int
    rejected: list[Rejected]
    created_at: datetime
    withdrawn_at: datetime | None = None  # its cells taken out of the case (POST .../withdraw)
    withdraw_reason: str | None = None

    model_config = {"from_attributes": True}
