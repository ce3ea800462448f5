"""Reports of a case for the chart (PDF) and the lab information system (FHIR R4 Bundle)."""
