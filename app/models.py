"""Every ORM model, imported once so metadata (Alembic, tests) sees all tables."""
from app.audit.models import AuditEvent
from app.cases.models import Case, Upload
from app.cells.models import Cell, Prediction
from app.taxonomy.models import LabCategory
from app.users.models import AccountEvent, ApiToken, FirstRun, User

__all__ = ["AccountEvent", "ApiToken", "AuditEvent", "Case", "Cell", "FirstRun", "LabCategory", "Prediction", "Upload", "User"]
