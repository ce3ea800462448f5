"""Every ORM model, imported once so metadata (Alembic, tests) sees all tables."""
from app.audit.models import AuditEvent
from app.cases.models import Case, Upload
from app.cells.models import Cell, Prediction
from app.taxonomy.models import LabCategory
from app.users.models import ApiToken, FirstRun, User

__all__ = ["ApiToken", "AuditEvent", "Case", "Cell", "FirstRun", "LabCategory", "Prediction", "Upload", "User"]
