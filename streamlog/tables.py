"""Plain-text tables, as every table streamlog prints off a terminal (the commands of
``streamlog``, the status table of ``streamlog up``): columns separated by two spaces,
padded to their widest value and never cut or wrapped, so piped into a file, ``grep`` or
``cut`` every value is complete whatever its width. On a terminal (and unless
``NO_COLOR`` is set) the headers are bold; a row wider than the window wraps as the
terminal wraps it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Sequence, TextIO


def is_terminal(out: TextIO) -> bool:
    """Whether ``out`` is a terminal (False for an object without a usable ``isatty``)."""
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def color(out: TextIO | None = None) -> bool:
    """Whether to style output: a terminal, and ``NO_COLOR`` unset."""
    return is_terminal(out or sys.stdout) and "NO_COLOR" not in os.environ


def _bold(text: str) -> str:
    return f"\x1b[1m{text}\x1b[0m"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[str] = (),
          title: str | None = None, header: bool = True) -> str:
    """A plain-text table: columns padded to their widest value, two spaces apart, columns
    named in ``right`` right-justified; nothing is ever truncated. ``header=False`` leaves
    out the header row (the key/value summary of ``info``, whose first column is bold)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h) if header else 0] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    styled = color()

    def line(values: Sequence[str], bold_header: bool = False, bold_first: bool = False) -> str:
        parts = []
        for i, (cell, width) in enumerate(zip(values, widths, strict=False)):  # a short row leaves the rest blank
            last = i == len(values) - 1
            padded = cell.rjust(width) if headers[i] in right else (cell if last else cell.ljust(width))
            if styled and (bold_header or (bold_first and i == 0)):
                padded = _bold(padded)
            parts.append(padded)
        return "  ".join(parts).rstrip()

    out = []
    if title:
        out.append(_bold(title) if styled else title)
    if header:
        out.append(line(headers, bold_header=True))
    out.extend(line(row, bold_first=not header) for row in cells)
    return "\n".join(out)
