"""`marrow model-agreement`, `marrow export-cells`: what the lab's signed cases say about the model."""
from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from app.cli import print_json


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _period_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=_day, metavar="YYYY-MM-DD",
                   help="cases signed on or after this day (the lab's time zone, MARROW_TIMEZONE)")
    p.add_argument("--until", type=_day, metavar="YYYY-MM-DD", help="... and on or before this day")
    p.add_argument("--model", metavar="VERSION", help="only cells last classified by this model version")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model-agreement", help="the model's first pass against the signed labels: agreement, "
                                               "PPV and sensitivity per category, UNK, blast percent, by month (JSON)")
    _period_arguments(p)
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report here too")
    p.set_defaults(func=cmd_model_agreement)

    p = sub.add_parser("export-cells", help="the signed cells as a folder-per-class dataset (DEST/<CODE>/...) "
                                            "for `marrow evaluate` and `marrow train`")
    p.add_argument("dest", type=Path, metavar="DEST")
    _period_arguments(p)
    p.add_argument("--all-categories", action="store_true",
                   help="also the lab's categories no model learns (PLM, ART, OTH, ...); default: skipped, counted")
    p.set_defaults(func=cmd_export_cells)


def _open(args: argparse.Namespace):
    from app.agreement.service import Period
    from app.cli.server import sessions
    from app.config import get_settings

    settings = get_settings()
    return settings, sessions(), Period(args.since, args.until, args.model)


def cmd_model_agreement(args: argparse.Namespace) -> int:
    from app.agreement.service import model_agreement

    settings, make_session, period = _open(args)
    with make_session() as session:
        print_json(model_agreement(session, period, settings.zone), args.json)
    return 0


def cmd_export_cells(args: argparse.Namespace) -> int:
    from app.exports.dataset import export_cells
    from app.storage import Storage

    settings, make_session, period = _open(args)
    with make_session() as session:
        print_json(export_cells(session, Storage(settings.storage_path), args.dest, period, settings.zone,
                                args.all_categories), None)
    return 0
