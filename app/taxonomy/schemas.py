from __future__ import annotations

from pydantic import BaseModel, Field


class CategoryIn(BaseModel):
    code: str = Field(description="2-8 capital letters/digits, unique; UNK is reserved")
    name: str
    key: str = Field(description="the review page's key: one lower-case letter or digit, unique, not a/g/z")
    counted: bool = Field(True, description="in the percent denominator")
    lineage: str = Field("", description="myeloid | erythroid | lymphoid | monocytic | plasma | "
                                         "megakaryocytic | other | '' (for the ratios)")


class CategoryOut(CategoryIn):
    predicted_by_model: bool = Field(description="the configured model has this class")
