"""One way to check what a person wrote: the configuration file, a plugin's settings, an emulator scenario.

A kind (`boolean`, `text`, `whole(1, 256)`, `choice(options)`, `table(known)`, ...) takes a value as TOML or JSON
gives it and returns it converted, or raises `Invalid`. Every refusal is worded the same way, "must be ..., not ..."
with the value as it was written (`shown`: a secret only by its kind), and every unknown key gets the same "did you
mean" (`unknown`). The caller says where the value is: a line and `section.key`, `plugins.NAME.key`, a [[device]].

The bounds (`MAX_*`, `oversized`, `placeholder_width_problem`) keep any value from exhausting the station: a
5,000-deep list, a megabyte of text, a naming placeholder a billion characters wide.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import string
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stationd.redact import is_secret_key, redact_text

MAX_DEPTH = 8  # tables and lists inside one another, counted from the top of the file
MAX_TEXT = 2048  # characters in one text value
MAX_ITEMS = 1000  # items in one list or one table
MAX_WIDTH = 64  # width or precision in a naming placeholder such as {n:03d}
SHOWN_LENGTH = 60  # a longer text is cut when shown in a message
UNBOUNDED = 1_000_000  # a maximum at least this large is enforced but not worth telling: "0 or more"

Converter = Callable[[Any], Any]
NOTHING: Any = object()
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NUMBER = re.compile(r"\d+")


class Invalid(ValueError):
    """A value that does not fit.

    `expected` ends the sentence "must be ..."; `message` replaces the whole sentence when the rule is not about
    the kind of value; `example` is a right value as written in TOML; `key` is where the refused value sits below
    the key being converted (".level", "[2]", '."Hub A · 1"'), empty when it is that key's own value.
    """

    def __init__(
        self,
        expected: str = "",
        value: Any = NOTHING,
        *,
        message: str | None = None,
        example: str | None = None,
        key: str = "",
    ) -> None:
        super().__init__(message or f"must be {expected}")
        self.expected, self.value, self.message, self.example, self.key = expected, value, message, example, key

    def inside(self, key: str) -> Invalid:
        """The same refusal, one level further down: `key` is ".name" (see `subkey`) or "[index]"."""
        return Invalid(self.expected, self.value, message=self.message, example=self.example, key=key + self.key)

    def explain(self, key: str = "") -> str:
        """The sentence for the value at `key`, its full name (which decides whether the value may be shown)."""
        if self.message:
            return self.message
        if self.value is NOTHING:
            return f"must be {self.expected}"
        return f"must be {self.expected}, not {shown(self.value, key)}"


def with_example(sentence: str, key: str, example: str | None) -> str:
    """`sentence`, then how to write `key` right (`example` is its value in TOML)."""
    return f"{sentence}; write for example: {key} = {example}" if example else sentence


def subkey(name: str) -> str:
    """`name` as the next part of a dotted key: `.level`, or `."Hub A · 1"` when it needs quotes."""
    return f".{name}" if _BARE_KEY.fullmatch(name) else f".{toml_string(name)}"


# -- names ------------------------------------------------------------------------------------------------------------
def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name that `name` is most likely a misspelling of, if any."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None


def unknown(name: str, known: Iterable[str], noun: str = "key", *, shape: str = "{}", listing: str = "") -> str:
    """ "unknown setting; did you mean concurrency?", or else `listing` (by default the known names)."""
    known = list(known)
    close = closest(name, known)
    hint = f"did you mean {shape.format(close)}?" if close else listing or f"known {noun}s: " + ", ".join(known)
    return f"unknown {noun}; {hint}"


# -- how values are shown ---------------------------------------------------------------------------------------------
def kind(value: Any) -> str:
    """What sort of value this is, in words: "a number", "text", "a list", ..."""
    if isinstance(value, bool):
        return "a true/false value"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "null"
    return "a date or time"


def shown(value: Any, key: str = "") -> str:
    """`value` as it was written, for a message: TOML spelling, credentials in URLs masked, long texts cut short.
    Lists, tables and the value of a secret key (a password, a token, ...) are shown only by their kind."""
    if isinstance(value, (list, dict)) or (key and is_secret_key(key)):
        return kind(value)
    if isinstance(value, str):
        text = toml_string(redact_text(value))
        return text if len(text) <= SHOWN_LENGTH else text[: SHOWN_LENGTH - 4] + '..."'
    if isinstance(value, (bool, int, float)):
        return toml_literal(value)
    return kind(value)


def toml_literal(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    return repr(value)


def toml_string(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML)."""
    return json.dumps(value, ensure_ascii=False)


# -- kinds ------------------------------------------------------------------------------------------------------------
def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("true or false" + _unquoted(value), value)
    return value


def text(value: Any) -> str:
    """Text that is not blank, as written."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid("some text in double quotes", value)
    return value


def whole(minimum: int = 0, maximum: int | None = None, *, what: str = "a whole number") -> Converter:
    """A whole number from `minimum` to `maximum` (true and false are not numbers)."""

    def convert(value: Any) -> int:
        number = isinstance(value, int) and not isinstance(value, bool)
        if not number or value < minimum or (maximum is not None and value > maximum):
            raise Invalid(what + _bounds(minimum, maximum) + _unquoted(value), value)
        return int(value)

    return convert


def number(
    minimum: float = 0, maximum: float | None = None, *, what: str = "a number", above: bool = False
) -> Converter:
    """A finite number from `minimum` (or, with `above`, greater than it) to `maximum`, as a float.

    NaN and infinity are refused: they defeat every bound and every deadline."""

    def convert(value: Any) -> float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not fits or value < minimum or (above and value == minimum) or (maximum is not None and value > maximum):
            raise Invalid(what + _bounds(minimum, maximum, above) + _unquoted(value), value)
        return float(value)

    return convert


def choice(options: Iterable[Any]) -> Converter:
    """One of `options`, returned as spelt there; text matches whatever its case and surrounding spaces."""
    options = tuple(options)

    def convert(value: Any) -> Any:
        for option in options:
            if isinstance(option, str) and isinstance(value, str) and value.strip().lower() == option.lower():
                return option
            if not isinstance(option, str) and type(value) is type(option) and value == option:
                return option
        listed = ", ".join(toml_literal(option) for option in options)
        raise Invalid(f"one of {listed}", value, example=toml_literal(options[0]))

    return convert


def path(base: Path) -> Converter:
    """A file or folder; a relative one is taken from `base` (the folder of the file it was written in)."""

    def convert(value: Any) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise Invalid("a file or folder path in double quotes", value, example='"/path/to/file"')
        given = Path(value).expanduser()
        return given if given.is_absolute() else Path(os.path.normpath(base / given))

    return convert


def texts(value: Any) -> tuple[str, ...]:
    """A list of texts, none blank."""
    return tuple(_each(value, text, "a list of texts in square brackets", '["Location", "Siri"]'))


def paths(base: Path) -> Converter:
    """A list of files, each as `path(base)` reads it."""
    to_path = path(base)

    def convert(value: Any) -> tuple[Path, ...]:
        return tuple(_each(value, to_path, "a list of file paths in square brackets", '["apps.mobileconfig"]'))

    return convert


def items(value: Any) -> list[Any]:
    """A list of anything (the caller checks each item)."""
    if not isinstance(value, list):
        raise Invalid("a list like [ ... ]", value)
    return value


def table(known: Iterable[str] | None = None, *, noun: str = "key") -> Converter:
    """A table; with `known`, one whose keys are all among them (the caller checks each value)."""
    allowed = None if known is None else list(known)

    def convert(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid("a table like { name = value, ... }", value)
        for name in value:
            if allowed is not None and name not in allowed:
                raise Invalid(message=unknown(name, allowed, noun), key=subkey(name))
        return value

    return convert


def url(value: Any) -> str:
    """A web address: http:// or https:// and a host."""
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise Invalid(
            "a web address starting with https:// or http://", value, example='"https://mdm.example.org/enroll"'
        )
    return value


def _each(value: Any, convert: Converter, expected: str, example: str) -> list[Any]:
    """Each item of the list `value` converted; a refused item is named by its index."""
    if not isinstance(value, list):
        raise Invalid(expected, value, example=example)
    converted = []
    for index, item in enumerate(value):
        try:
            converted.append(convert(item))
        except Invalid as bad:
            raise bad.inside(f"[{index}]") from None
    return converted


def _unquoted(value: Any) -> str:
    return " (without quotes)" if isinstance(value, str) else ""


def _bounds(minimum: float, maximum: float | None, above: bool = False) -> str:
    low = _figure(minimum)
    if above:
        return f", greater than {low}" + (f" and at most {_figure(maximum)}" if maximum is not None else "")
    if maximum is None or maximum >= UNBOUNDED:
        return f", {low} or more"
    return f" from {low} to {_figure(maximum)}"


def _figure(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


# -- bounds -----------------------------------------------------------------------------------------------------------
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
        widest = max((int(figure) for figure in _NUMBER.findall(spec)), default=0)
        if widest > MAX_WIDTH:
            return f"{{{name}:{spec}}} is {widest:,} characters wide; a placeholder is at most {MAX_WIDTH} wide"
    return None
