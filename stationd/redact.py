"""The one notion of a secret value: which fields are secrets, and how a URL is shown without its credentials.

A URL can carry credentials in its userinfo (`https://user:password@host/`) and in its query
(`?invitation=TOKEN`, `?access_token=...`): an MDM's enrollment URL often does. Wherever a URL is shown, stored,
logged, exported or sent to a plugin, it goes through `redact_url` (or `redact_text` for a message that contains
URLs): the scheme, host, port and path stay, so a technician still sees which server and which path failed; the
userinfo and every query and fragment value become `***`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
SECRET_WORDS = ("password", "secret", "token", "private", "key_pem", "passphrase", "authorization", "cookie")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s<>\"'`]+")
_TRAILING = ".,;:!?)]}"


def is_secret_key(name: str) -> bool:
    """A field or setting whose value is a secret, by its name (password, token, authorization, ...)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact_url(url: str) -> str:
    """`url` with its userinfo and its query and fragment values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, _mask_values(parts.query), _mask_values(parts.fragment)))


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with every URL in it redacted."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_match, text)


def redact(value: Any) -> Any:
    """`value` with every string in it (in dicts, lists and tuples too) passed through `redact_text`."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item) for item in value)
    return value


def _redact_match(match: re.Match[str]) -> str:
    url = match.group(0)
    kept = len(url.rstrip(_TRAILING))
    return redact_url(url[:kept]) + url[kept:]


def _mask_values(query: str) -> str:
    if not query:
        return query
    pairs = []
    for pair in query.split("&"):
        name, sep, _ = pair.partition("=")
        pairs.append(f"{name}={MASK}" if sep else (MASK if pair else pair))
    return "&".join(pairs)
