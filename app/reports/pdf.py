"""The case's PDF for the patient's chart (fpdf2).

Its text is DejaVu Sans, embedded and subset (matplotlib, a dependency, ships the font), so names
in Latin, Greek or Cyrillic scripts print as typed and the text stays extractable. Characters
DejaVu lacks are drawn by a font for their script where the machine has one (fonts.py: WenQuanYi
for Chinese, Japanese and Korean, Noto for Devanagari, Tamil, Bengali, Thai and the other
scripts), embedded only in reports that need it. Where the report holds right-to-left text
(Hebrew, Arabic) or a script drawn by a Noto font, HarfBuzz shapes it (uharfbuzz): lines run
right to left, Arabic letters join, Indic vowel signs and conjuncts take their places. A
character no font here has a glyph for (emoji; a script without its font) prints as its code
point, <U+6F22>: a patient's accession is never changed silently, as the Latin-1 core fonts'
"?" did.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Iterator

from fpdf import FPDF

from app.localtime import lab_time
from app.reports.fonts import CJK_FONT, FONT, FONT_DIR, FONT_FILES, fallback_fonts
from app.storage import Storage

JOINERS = (0x200C, 0x200D)  # zero-width non-joiner and joiner
DEFINITION_NOTE = ("Percent = cells of a category / counted cells (unidentified cells and the not-counted "
                   "categories are in no denominator). 95 % CI = exact (Clopper-Pearson) binomial interval, "
                   "as tabulated by Rümke for differential counts.")


def _strings(value) -> Iterator[str]:
    """Every string in the report's data (dicts, lists and tuples walked)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _pct(v) -> str:
    return "" if v is None else f"{v:.1f}"


class _Report(FPDF):
    """A4 with a footer on every page naming the case, whether the report is signed, and
    "page N of M", so a printed page that strays from the chart can be put back and a missing
    one noticed."""

    def __init__(self, footer_text: str, data: dict):
        super().__init__(format="A4")
        for style, name in FONT_FILES.items():
            self.add_font(FONT, style, str(FONT_DIR / name))
        self.footer_text = footer_text
        self.fallback_cmaps: tuple[dict[int, int], ...] = ()
        chars = {ch for text in _strings(data) for ch in text}
        drawn = self.fonts[FONT.lower()].cmap
        # Fallback fonts and text shaping only when the report needs them: a font costs up to
        # 0.2 s and a few kB of PDF, shaping up to 0.2 s a page of text.
        fallbacks = fallback_fonts(ch for ch in chars if ord(ch) not in drawn)
        for family, path in fallbacks.items():
            self.add_font(family, "", str(path))
        if fallbacks:
            self.set_fallback_fonts(list(fallbacks), exact_match=False)
            self.fallback_cmaps = tuple(self.fonts[family.lower()].cmap for family in fallbacks)
        self._run_font: str | None = None
        # Han, kana and hangul need no shaping; the scripts Noto draws here (Indic, Thai, ...) do.
        if noto := set(fallbacks) - {CJK_FONT}:
            self._joiners_to_fallbacks()
        if noto or any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in chars):
            self.set_text_shaping(use_shaping_engine=True)

    def _joiners_to_fallbacks(self) -> None:
        """A joiner must be shaped with the letters it joins (ශ්‍රී, क्‍ष): drawn in DejaVu, which
        has it, it would cut the run in two and show a bare virama. Taken out of DejaVu's map, it
        goes to get_fallback_font, which keeps it in the run's font."""
        for style in FONT_FILES:
            for joiner in JOINERS:
                self.fonts[FONT.lower() + style].cmap.pop(joiner, None)

    def get_fallback_font(self, char: str, style: str = "") -> str | None:
        """fpdf2's choice (the first fallback font that has the character), except that a
        joiner stays in the font of the run it is in."""
        if ord(char) in JOINERS and self._run_font and ord(char) in self.fonts[self._run_font].cmap:
            return self._run_font
        self._run_font = super().get_fallback_font(char, style)
        return self._run_font

    def printable(self, text) -> str:
        """The text with every character neither the current font nor a fallback can draw
        written as its code point."""
        cmaps = (self.current_font.cmap, *self.fallback_cmaps)
        return "".join(ch if ch == "\n" or any(ord(ch) in cmap for cmap in cmaps) else f"<U+{ord(ch):04X}>"
                       for ch in str(text))

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, "I", 7)
        self.cell(0, 5, self.printable(f"{self.footer_text} · page {self.page_no()} of {{nb}}"), align="C")


def _status_word(case: dict, amended: bool) -> str:
    if case["signed_at"] is None:
        return "PRELIMINARY, not signed"
    return "amended report" if amended else "signed"


def render_pdf(data: dict, storage: Storage) -> bytes:
    case = data["case"]
    amended = data["amends"] and case["signed_at"] is not None
    pdf = _Report(f"MarrowDiff · {case['accession']} (case {case['id']}) · {_status_word(case, amended)}", data)
    _t = pdf.printable

    pdf.set_auto_page_break(True, margin=18)
    pdf.set_title(f"Bone-marrow differential {case['accession']}")
    pdf.set_creator("MarrowDiff")
    pdf.add_page()
    pdf.set_font(FONT, "B", 15)
    pdf.cell(0, 9, _t("Bone-marrow differential count" + (": amended report" if amended else "")),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 10)
    for label, value in (("Case", f"{case['accession']} (case {case['id']})"), ("Specimen", case["specimen"]),
                         ("Status", case["status"]),
                         ("Signed by", f"{case['signed_by']} at {lab_time(case['signed_at'], data['zone'], seconds=False)}" if case["signed_at"]
                          else "not signed (preliminary)"),
                         *((("Comment", case["sign_comment"]),) if case["sign_comment"] else ()),
                         ("Model version", ", ".join(data["model_versions"]) or "none"),
                         ("Cells", f"{case['cells_total']} imaged, {data['counted_total']} counted, "
                                   f"target {'/'.join(map(str, data['targets']))}")):
        pdf.set_font(FONT, "B", 10)
        pdf.cell(32, 6, _t(label + ":"))
        pdf.set_font(FONT, "", 10)
        pdf.multi_cell(0, 6, _t(value), new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.ln(2)
    blast = data["blast_percent"]
    pdf.set_font(FONT, "B", 11)
    marks = " / ".join(f"{m:g} %" for m in data["marks"])
    level = {None: "no cells counted", 0: f"below {data['marks'][0]:g} %", 1: f"at or above {data['marks'][0]:g} %",
             2: f"at or above {data['marks'][1]:g} %"}[data["blast_level"]]
    pdf.cell(0, 7, _t(f"Blasts: {_pct(blast) or '-'} % ({level}; marks {marks})"), new_x="LMARGIN", new_y="NEXT")

    pdf.set_font(FONT, "B", 9)
    widths = (18, 58, 18, 22, 40)
    for w, head in zip(widths, ("Code", "Category", "Count", "%", "95 % CI")):
        pdf.cell(w, 6, _t(head), border="B")
    pdf.ln()
    pdf.set_font(FONT, "", 9)
    if data["unidentified"]:
        for w, v in zip(widths, ("UNK", "Unidentified (not counted)", str(data["unidentified"]), "", "")):
            pdf.cell(w, 5, _t(v))
        pdf.ln()
    for r in data["table"]:
        ci = f"{_pct(r['ci_low'])} - {_pct(r['ci_high'])}" if r["ci_low"] is not None else ""
        cells = (r["code"], r["name"] + ("" if r["counted"] else " (not counted)"), str(r["count"]),
                 _pct(r["percent"]) if r["counted"] else "n/c", ci)
        for w, v in zip(widths, cells):
            pdf.cell(w, 5, _t(v))
        pdf.ln()
    pdf.set_font(FONT, "I", 7)
    pdf.multi_cell(0, 4, _t(DEFINITION_NOTE), new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.ln(2)
    pdf.set_font(FONT, "B", 10)
    pdf.cell(0, 6, _t("Ratios and indices"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 9)
    for ix in data["indices"]:
        if ix["kind"] == "ratio":
            value = "-" if ix["value"] is None else f"{ix['value']:.2f}"
            hi = "inf" if ix["ci_high"] is None else f"{ix['ci_high']:.2f}"
            ci = f" (95 % CI {ix['ci_low']:.2f} - {hi})" if ix["ci_low"] is not None else ""
        else:
            value = "-" if ix["value"] is None else f"{ix['value']:.1f} %"
            ci = f" (95 % CI {ix['ci_low']:.1f} - {ix['ci_high']:.1f})" if ix["ci_low"] is not None else ""
        pdf.multi_cell(0, 5, _t(f"{ix['name']}: {value}{ci}   [{ix['definition']}]"), new_x="LMARGIN", new_y="NEXT",
                       align="L")
    pdf.ln(2)
    pdf.set_font(FONT, "B", 10)
    pdf.cell(0, 6, _t("Flags"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 9)
    for flag in data["flags"] or ["none"]:
        pdf.multi_cell(0, 5, _t(f"- {flag}"), new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.ln(2)
    pdf.set_font(FONT, "B", 10)
    pdf.cell(0, 6, _t(f"Blasts ({data['blast_total']} cells; first {len(data['blast_images'])} shown)"),
             new_x="LMARGIN", new_y="NEXT")
    side, gap = 22, 2
    per_row = int((pdf.w - pdf.l_margin - pdf.r_margin + gap) // (side + gap))
    paths = [storage.path(key) for key in data["blast_images"]]
    for start in range(0, len(paths), per_row):
        if pdf.get_y() + side > pdf.h - pdf.b_margin:
            pdf.add_page()
        y = pdf.get_y()
        for i, path in enumerate(paths[start:start + per_row]):
            if path.is_file():
                pdf.image(str(path), x=pdf.l_margin + i * (side + gap), y=y, w=side, h=side)
        pdf.set_y(y + side + gap)
    return bytes(pdf.output())
