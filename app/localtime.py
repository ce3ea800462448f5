"""Times as people read them: in the lab's time zone (MARROW_TIMEZONE, an IANA name; default
UTC), named by its abbreviation. The database, the CSVs, FHIR and the JSON API keep UTC."""
from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def time_zone(name: str) -> ZoneInfo:
    """The zone of an IANA name (`Europe/Berlin`), or ValueError saying what is expected."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not a time zone; give an IANA name such as Europe/Berlin, America/Chicago or UTC") from None


def lab_time(value: datetime | None, tz: ZoneInfo, seconds: bool = True) -> str:
    """`2026-12-04 20:57:36 CET`; stored times are UTC (a naive one is read as UTC)."""
    if value is None:
        return ""
    local = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")
