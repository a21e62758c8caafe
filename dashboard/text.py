"""Text a client stored (run, tag and group names, spec strings, error messages) made safe for the three places
the dashboard puts it: Streamlit's markdown, Plotly's labels, and cells a spreadsheet may open.

Streamlit renders titles, captions, alerts and widget labels as markdown, and Plotly reads a few HTML tags in
names and titles; a stored ``![x](http://evil.example/x.png)`` or ``<a href=…>`` would fetch or link. Each
function here turns such text into what it says, and nothing else. Pure functions: no Streamlit.
"""

from __future__ import annotations

import html
import re

MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")
"""Every ASCII punctuation character: CommonMark lets a backslash make each one literal, which covers emphasis,
links, images, raw HTML, headings, lists, tables, code and Streamlit's ``:colour[…]`` and ``$math$``."""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A cell starting with one of these is a formula to a spreadsheet (OWASP's CSV injection list)."""


def md(text: object) -> str:
    """``text`` as literal markdown: shown exactly as it is written, never as markup, a link or an image.

    Line breaks become spaces, so a name cannot start a heading, a list or a code block of its own."""
    flat = " ".join(str(text).splitlines())
    return MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def plotly_text(text: object) -> str:
    """``text`` for a Plotly trace name, title or hover text: its ``<``, ``>`` and ``&`` as entities, so Plotly
    draws them instead of reading tags (``<a href>``, ``<br>``, ``<b>``)."""
    return html.escape(str(text), quote=False)


def csv_cell(value: object) -> object:
    """A table cell a spreadsheet will not run: text starting with ``= + - @``, tab or carriage return gets a
    leading ``'`` (as OWASP recommends); numbers and everything else pass unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
