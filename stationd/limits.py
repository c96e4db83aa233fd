"""Bounds on what a configuration file may hold, so that no value can exhaust the station (a 5,000-deep list, a
megabyte of text, a naming placeholder a billion characters wide). `stationd.config` reports each breach with its
key and line, like any other mistake."""

from __future__ import annotations

import re
import string
from typing import Any

MAX_DEPTH = 8  # tables and lists inside one another, counted from the top of the file
MAX_TEXT = 2048  # characters in one text value
MAX_ITEMS = 1000  # items in one list or one table
MAX_WIDTH = 64  # width or precision in a naming placeholder such as {n:03d}
_NUMBER = re.compile(r"\d+")


def deepest_line(text: str, limit: int = MAX_DEPTH) -> int | None:
    """The first line where brackets nest deeper than `limit` (outside strings and comments), or None."""
    depth, line, index, quote = 0, 1, 0, ""
    while index < len(text):
        char = text[index]
        if char == "\n":
            line += 1
        if quote:
            if char == "\\" and quote in ('"', '"""'):
                index += 2
                continue
            if text.startswith(quote, index):
                index += len(quote)
                quote = ""
                continue
        elif char in "\"'":
            quote = char * 3 if text.startswith(char * 3, index) else char
            index += len(quote)
            continue
        elif char == "#":
            end = text.find("\n", index)
            index = len(text) if end < 0 else end
            continue
        elif char in "[{":
            depth += 1
            if depth > limit:
                return line
        elif char in "]}":
            depth = max(0, depth - 1)
        index += 1
    return None


def oversized(value: Any, depth: int) -> str | None:
    """What makes `value` (found `depth` levels down) too big: too deep, too long, too many items; or None."""
    pending = [(value, depth)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, str) and len(item) > MAX_TEXT:
            return f"is longer than {MAX_TEXT:,} characters ({len(item):,})"
        if isinstance(item, (list, dict)):
            if level >= MAX_DEPTH:
                return f"nests lists or tables more than {MAX_DEPTH} levels deep"
            if len(item) > MAX_ITEMS:
                return f"holds more than {MAX_ITEMS:,} items ({len(item):,})"
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, level + 1) for child in children)
            if isinstance(item, dict):
                pending.extend((key, level + 1) for key in item)
    return None


def placeholder_width_problem(pattern: str) -> str | None:
    """A placeholder whose width or precision is beyond MAX_WIDTH (`{n:999999999}` would take a gigabyte)."""
    for _, name, spec, _ in string.Formatter().parse(pattern):
        if name is None or not spec:
            continue
        widest = max((int(number) for number in _NUMBER.findall(spec)), default=0)
        if widest > MAX_WIDTH:
            return f"{{{name}:{spec}}} is {widest:,} characters wide; a placeholder is at most {MAX_WIDTH} wide"
    return None
