"""Which fonts draw a report's text: DejaVu Sans for Latin, Greek, Cyrillic, Hebrew and Arabic, and
for the characters it lacks a font chosen by their Unicode script.

Chinese, Japanese and Korean take WenQuanYi (Debian's fonts-wqy-microhei); every other script
takes Google's Noto font named for it (Debian's fonts-noto-core: NotoSansDevanagari for Hindi or
Marathi, NotoSansTamil, NotoSansThai, ...; the Serif design where Noto has no Sans one). Fonts
are looked up only for scripts a report holds, so a Latin report embeds DejaVu alone. A font the
machine lacks is skipped: its characters then print as code points (pdf.py).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

from fontTools import unicodedata as ucd

FONT = "DejaVu"
FONT_DIR = Path(importlib.util.find_spec("matplotlib").origin).parent / "mpl-data" / "fonts" / "ttf"
FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf", "I": "DejaVuSans-Oblique.ttf"}
CJK_FONT = "WenQuanYi"
CJK_FONTS = (Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # Debian fonts-wqy-microhei
             Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"))  # fonts-wqy-zenhei
CJK_SCRIPTS = frozenset({"Hani", "Hira", "Kana", "Hang", "Bopo"})
NOTO_DIR = Path("/usr/share/fonts/truetype/noto")  # Debian fonts-noto-core
# Characters shared by many scripts (digits, punctuation, combining marks) choose no font: the
# fonts chosen for the report's letters draw them where DejaVu does not.
SHARED_SCRIPTS = frozenset({"Zyyy", "Zinh", "Zzzz"})


def cjk_file() -> Path | None:
    """The first WenQuanYi font the machine has."""
    return next((path for path in CJK_FONTS if path.is_file()), None)


def _noto_files() -> dict[str, Path]:
    """Noto font files by lower-case name ("notosansdevanagari-regular"): Noto spells some scripts
    differently from Unicode's names ("NKo" for "Nko"). Read for each report (one folder
    listing), so fonts installed while the server runs are used at once, as CJK_FONTS are."""
    if not NOTO_DIR.is_dir():
        return {}
    return {path.stem.lower(): path for path in NOTO_DIR.glob("Noto*.ttf")}


def _noto_font(script: str, files: dict[str, Path]) -> Path | None:
    """The regular Noto file for a script, or None. Regular only: the words a report prints in
    bold are its own, which DejaVu draws."""
    name = "".join(ch for ch in ucd.script_name(script, default="") if ch.isalnum()).lower()
    return files.get(f"notosans{name}-regular") or files.get(f"notoserif{name}-regular")


def fallback_fonts(missing: Iterable[str]) -> dict[str, Path]:
    """Font families, by name, with their files, to draw characters DejaVu cannot."""
    scripts = {ucd.script(ch) for ch in missing} - SHARED_SCRIPTS
    fonts: dict[str, Path] = {}
    if scripts & CJK_SCRIPTS:
        if cjk := cjk_file():
            fonts[CJK_FONT] = cjk
    if others := sorted(scripts - CJK_SCRIPTS):
        files = _noto_files()
        for script in others:
            if path := _noto_font(script, files):
                fonts[f"Noto {script}"] = path
    return fonts


def noto_fonts() -> int:
    """How many regular Noto fonts the machine has (one for each script it covers, or two:
    Sans and Serif)."""
    return sum(stem.endswith("-regular") for stem in _noto_files())
