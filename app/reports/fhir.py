"""The case as a FHIR R4 Bundle: one DiagnosticReport, one Observation per category and per
index, validated by building them with fhir.resources' R4B models (R4B = FHIR 4.3, the
R4-compatible release: Bundle, DiagnosticReport and Observation are unchanged from 4.0.1).

Codes: LOINC only where a code's meaning was checked against a named source (comment beside
it); every other code is in the project's own code system, CODE_SYSTEM."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fhir.resources.R4B.bundle import Bundle

CODE_SYSTEM = "https://marrowdiff.example/fhir/CodeSystem/marrow-differential"
CASE_SYSTEM = "https://marrowdiff.example/fhir/NamingSystem/case-accession"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory", "display": "Laboratory"}]}

# Verified: each code's LOINC name read on https://www.healthassure.in/codes/loinc-<code>-...
# (a LOINC code lookup site, updated 2026-05-21): component, "Bone marrow" system, manual count.
LOINC_CODES = {
    # 11105-4 "Basophils/Cells Manual cnt (BM)": Basophils/cells in Bone marrow by Manual count (%)
    "BAS": ("11105-4", "Basophils/cells in Bone marrow by Manual count"),
    # 11108-8 "Lymphocytes/Cells Manual cnt (BM)": Lymphocytes/cells in Bone marrow by Manual count (%)
    "LYT": ("11108-8", "Lymphocytes/cells in Bone marrow by Manual count"),
    # 40689-2 "Erythroid cells/Cells Manual cnt (BM)": Erythroid cells/cells in Bone marrow by Manual count (%)
    "erythroid_percent": ("40689-2", "Erythroid cells/cells in Bone marrow by Manual count"),
    # 11138-5 "Myeloid cells/Erythroid cells (BM) [# ratio]": Myeloid cells/Erythroid cells [# Ratio] in Bone marrow
    "me_ratio": ("11138-5", "Myeloid cells/Erythroid cells [# Ratio] in Bone marrow"),
}


def _code(key: str, display: str) -> dict:
    codings = [{"system": CODE_SYSTEM, "code": key, "display": display}]
    if key in LOINC_CODES:
        codings.insert(0, {"system": LOINC, "code": LOINC_CODES[key][0], "display": LOINC_CODES[key][1]})
    return {"coding": codings, "text": display}


def _component(key: str, display: str, value: float, unit: str, ucum: str) -> dict:
    return {"code": {"coding": [{"system": CODE_SYSTEM, "code": key, "display": display}]},
            "valueQuantity": {"value": round(value, 4), "unit": unit, "system": UCUM, "code": ucum}}


def _iso(dt: datetime | None) -> str:
    return (dt or datetime.now(UTC)).isoformat()


def build_bundle(data: dict) -> str:
    """The Bundle (type collection) as FHIR JSON; raises pydantic's ValidationError if
    any resource is not valid R4(B)."""
    case = data["case"]
    final = case["signed_at"] is not None
    status = ("amended" if data["amends"] else "final") if final else "preliminary"
    issued = _iso(case["signed_at"] or case["created_at"])
    subject = {"identifier": {"system": CASE_SYSTEM, "value": case["accession"]}, "display": case["accession"]}
    observations = []

    def observation(key: str, display: str, value: dict, components: list[dict], note: str | None = None) -> None:
        obs = {"resourceType": "Observation", "id": str(uuid.uuid4()), "status": status,
               "category": [OBS_CATEGORY], "code": _code(key, display), "subject": subject,
               "effectiveDateTime": _iso(case["created_at"]), "issued": issued, **value}
        if components:
            obs["component"] = components
        if note:
            obs["note"] = [{"text": note}]
        observations.append(obs)

    for row in data["table"]:
        comps = [{"code": {"coding": [{"system": CODE_SYSTEM, "code": "cell-count", "display": "Cells counted in category"}]},
                  "valueInteger": row["count"]}]
        if row["counted"] and row["percent"] is not None:
            comps += [_component("ci95-low", "95 % CI lower bound (exact binomial)", row["ci_low"], "%", "%"),
                      _component("ci95-high", "95 % CI upper bound (exact binomial)", row["ci_high"], "%", "%")]
            value = {"valueQuantity": {"value": round(row["percent"], 4), "unit": "%", "system": UCUM, "code": "%"}}
        elif row["counted"]:
            value = {"dataAbsentReason": {"text": "no cells counted"}}
        else:
            value = {"valueInteger": row["count"]}  # not counted: reported as a count only
        observation(row["code"], row["name"], value, comps,
                    None if row["counted"] else "not counted in the differential's denominator")
    for ix in data["indices"]:
        comps = []
        if ix["kind"] == "ratio":
            unit, ucum = "ratio", "{ratio}"
        else:
            unit, ucum = "%", "%"
        if ix["ci_low"] is not None:
            comps.append(_component("ci95-low", "95 % CI lower bound", ix["ci_low"], unit, ucum))
        if ix["ci_high"] is not None:
            comps.append(_component("ci95-high", "95 % CI upper bound", ix["ci_high"], unit, ucum))
        value = ({"valueQuantity": {"value": round(ix["value"], 4), "unit": unit, "system": UCUM, "code": ucum}}
                 if ix["value"] is not None else {"dataAbsentReason": {"text": "denominator is zero"}})
        observation(ix["code"], ix["name"], value, comps, ix["definition"])

    report = {
        "resourceType": "DiagnosticReport", "id": str(uuid.uuid4()), "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM",
                                  "display": "Hematology"}]}],
        "code": {"coding": [{"system": CODE_SYSTEM, "code": "marrow-differential",
                             "display": "Bone-marrow differential count"}], "text": "Bone-marrow differential count"},
        "subject": subject, "effectiveDateTime": _iso(case["created_at"]), "issued": issued,
        "identifier": [{"system": CASE_SYSTEM, "value": case["accession"]}],
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
        # the signer's comment first (their interpretation), then the report's flags
        "conclusion": "; ".join(filter(None, (case["sign_comment"], *data["flags"]))) or None,
    }
    if final:
        report["resultsInterpreter"] = [{"display": case["signed_by"]}]
    if report["conclusion"] is None:
        del report["conclusion"]
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in (report, *observations)]
    bundle = Bundle.model_validate({"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "collection",
                                    "timestamp": _iso(None), "entry": entries})
    return bundle.model_dump_json()
