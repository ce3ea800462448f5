"""GET /api/cases/{id}/report.pdf and /api/cases/{id}/fhir: a logged-in user or a token only,
like the CSVs (CurrentUser accepts either)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.deps import CurrentUser, SessionDep, SettingsDep, StorageDep
from app.reports.data import report_data
from app.reports.fhir import build_bundle
from app.reports.pdf import render_pdf

router = APIRouter(prefix="/api", tags=["exports"])
FHIR_JSON = "application/fhir+json"


@router.get("/cases/{case_id}/report.pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}})
def report_pdf(case_id: int, session: SessionDep, _user: CurrentUser,
               storage: StorageDep, settings: SettingsDep) -> Response:
    """The case's report for the chart: counts, percentages with 95 % intervals, ratios, blast
    marks, flags, signature, model version and the blasts' images ("PRELIMINARY" until signed)."""
    pdf = render_pdf(report_data(session, case_id, settings.zone), storage)
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="case-{case_id}-report.pdf"'})


@router.get("/cases/{case_id}/fhir", response_class=Response, responses={200: {"content": {FHIR_JSON: {}}}})
def fhir_bundle(case_id: int, session: SessionDep, _user: CurrentUser, settings: SettingsDep) -> Response:
    """A FHIR R4 Bundle: a DiagnosticReport (final once signed, else preliminary) and one
    Observation per category and per index, validated before it is sent."""
    return Response(build_bundle(report_data(session, case_id, settings.zone)), media_type=FHIR_JSON,
                    headers={"Content-Disposition": f'attachment; filename="case-{case_id}-fhir.json"'})
