"""Where each key of a TOML text is: :mod:`tomllib` gives values, not positions, and a
pipeline file's error messages name the line (:mod:`streamlog.apps.spec`)."""

from __future__ import annotations

import re

_HEADER = re.compile(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"\s*((?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _key_path(text: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in re.findall(r"\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+", text))


class Lines:
    """The line of each key and table header in a TOML text (for error messages).

    A small scanner, enough for the files people write: table headers, keys and dotted
    keys at the start of a line, multi-line arrays, inline tables and strings skipped.
    A key's own line is found, else its closest enclosing table's, else line 1."""

    def __init__(self, text: str):
        self.where: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        depth = 0
        in_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), 1):
            if in_multiline is not None:
                if in_multiline in line:
                    in_multiline = None
                continue
            if depth == 0:
                header = _HEADER.match(line)
                if header and not line.lstrip().startswith("[["):
                    table = _key_path(header.group(1))
                    self.where.setdefault(table, number)
                    continue
                key = _KEY.match(line)
                if key:
                    self.where.setdefault(table + _key_path(key.group(1)), number)
            depth, in_multiline = _scan(line, depth)

    def line(self, *path: str) -> int:
        for end in range(len(path), 0, -1):
            if path[:end] in self.where:
                return self.where[path[:end]]
        return 1


def _scan(line: str, depth: int) -> tuple[int, str | None]:
    """Bracket depth after ``line`` (strings and comments skipped), and the delimiter of a
    multi-line string left open."""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == "#":
            break
        if line.startswith('"""', i) or line.startswith("'''", i):
            delim = line[i:i + 3]
            end = line.find(delim, i + 3)
            if end < 0:
                return depth, delim
            i = end + 3
            continue
        if c in "\"'":
            end = i + 1
            while end < n and line[end] != c:
                end += 2 if c == '"' and line[end] == "\\" else 1
            i = end + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, None
