"""Text cells that a spreadsheet cannot run: the one guard against CSV formula injection.

A CSV cell that begins with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return) is read as a
formula by Excel, LibreOffice and Google Sheets, so a class name, file name or label such as
``=HYPERLINK("http://evil", "x")`` written as is would run when a user opens the file. OWASP's
rule is applied to every *text* cell that bregnet writes from user-controlled strings: such a
cell gets a leading single quote, which spreadsheets show as text and do not evaluate. Numbers
(``int``, ``float``) are never touched, so a negative valence stays a number.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["FORMULA_PREFIXES", "spreadsheet_safe", "spreadsheet_safe_row"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet treat a cell as a formula (OWASP)."""


def spreadsheet_safe(value: Any) -> Any:
    """``value`` unchanged unless it is text starting with one of :data:`FORMULA_PREFIXES`, which
    gets a leading ``'``. Non-text values (numbers, None) pass through untouched."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def spreadsheet_safe_row(values: Iterable[Any]) -> list[Any]:
    """:func:`spreadsheet_safe` applied to every cell of a row."""
    return [spreadsheet_safe(v) for v in values]
