"""What HTTP reporters share: secrets named in their settings, templates filled with a device's fields, and the
one reading of an answer (done, retry when, or failed with the server's own words)."""

from __future__ import annotations

import email.utils
import json
import os
import re
import stat
import string
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from stationd import outbound
from stationd.redact import redact_text
from stationd.reporting.reporter import Result

SECRET = re.compile(r"\{(env|file):([^{}]*)\}")
MAX_SECRET_BYTES = 16 * 1024
MAX_RETRY_AFTER = 86400.0
SECRET_HEADERS = ("authorization", "token", "key", "secret", "cookie", "password")


class SecretError(ValueError):
    """A secret named in the settings cannot be read; the message never holds the secret."""


def reveal(text: str) -> str:
    """`text` with each `{env:NAME}` replaced by that environment variable and each `{file:/path}` by that file's
    content (its last newline dropped); the file must be readable by its owner only (0600)."""

    def value(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2).strip()
        if kind == "env":
            if not name or name not in os.environ:
                raise SecretError(f"the environment variable {name or '(unnamed)'} is not set for the station")
            return os.environ[name]
        return _secret_file(Path(name))

    return SECRET.sub(value, text)


def names_secret(text: str) -> bool:
    """The text takes its secret from the environment or a file, rather than holding it."""
    return bool(SECRET.search(text))


def secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_HEADERS)


def _secret_file(path: Path) -> str:
    if not path.is_absolute():
        raise SecretError(f"{{file:{path}}} must name the file by its full path, like {{file:/etc/stationd/mdm.key}}")
    try:
        info = path.stat()
    except OSError as error:
        raise SecretError(f"cannot read the secret file {path}: {error.strerror}") from None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise SecretError(f"the secret file {path} can be read by other users (mode {mode:04o}): chmod 600 {path}")
    if info.st_size > MAX_SECRET_BYTES:
        raise SecretError(f"the secret file {path} is {info.st_size:,} bytes: a secret is a line of text")
    try:
        return path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except (OSError, UnicodeDecodeError) as error:
        raise SecretError(f"cannot read the secret file {path}: {error}") from None


def placeholders(template: str) -> list[str]:
    """The field names a template uses ({serial}, {name}, ...); `{env:...}` and `{file:...}` are not fields."""
    stripped = SECRET.sub("", template)
    return [name for _, name, _, _ in string.Formatter().parse(stripped) if name is not None]


def fill(template: str, fields: dict[str, Any], *, for_url: bool = False) -> str:
    """The template with each {field} replaced by the device's value (nothing for none); quoted in a URL."""

    def value(name: str) -> str:
        found = fields.get(name)
        text = "" if found is None else str(found)
        return quote(text, safe="") if for_url else text

    out = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(format(value(name), spec or ""))
    return "".join(out)


def fill_body(template: Any, fields: dict[str, Any]) -> Any:
    """A JSON body template filled in: a text that is exactly "{field}" takes the field's value as it is (a number
    stays a number); any other text is filled as text; tables and lists are filled inside."""
    if isinstance(template, str):
        names = placeholders(template)
        if len(names) == 1 and template == f"{{{names[0]}}}":
            return fields.get(names[0])
        return fill(template, fields)
    if isinstance(template, dict):
        return {key: fill_body(value, fields) for key, value in template.items()}
    if isinstance(template, list):
        return [fill_body(value, fields) for value in template]
    return template


def retry_after(response: Any) -> float | None:
    """Seconds the server asked to wait (Retry-After as seconds or a date), at most a day; None if not said."""
    given = (response.headers.get("retry-after") or "").strip()
    if not given:
        return None
    if given.isdigit():
        return min(float(given), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(given)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


def server_words(response: Any, limit: int = 200) -> str:
    """What the server said about a refusal, in its own words, short and without URLs' secrets."""
    text = ""
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        body = None
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            text = str(first.get("detail") or first.get("title") or first.get("description") or first.get("code") or "")
        elif isinstance(errors, list) and errors:
            text = str(errors[0])
        for key in ("message", "error_description", "error", "detail", "title"):
            if not text and isinstance(body.get(key), str):
                text = body[key]
    elif isinstance(body, str):
        text = body
    elif not body and response.content and "html" not in response.headers.get("content-type", ""):
        text = response.content[:limit].decode("utf-8", errors="replace")
    text = " ".join(redact_text(text).split())
    return text[:limit]


def judge(response: Any, what: str, *, auth_hint: str) -> Result | None:
    """None when the answer is a success (2xx); else how the delivery goes on: 408, 425, 429 and 5xx are retried
    (when Retry-After says), 401 and 403 fail with `auth_hint`, any other refusal fails with the server's words."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    said = server_words(response)
    detail = f"HTTP {status}" + (f": {said}" if said else "")
    if status in (408, 425, 429) or status >= 500:
        return Result.retry(f"{what} answered {detail}", after=retry_after(response))
    if status in (401, 403):
        return Result.failed(f"{what} refused the credentials ({detail}): {auth_hint}")
    return Result.failed(f"{what} refused the request ({detail})")


def fill_secrets(template: str, fields: dict[str, Any]) -> str:
    """A header template filled in: {field} from the device, {env:NAME} and {file:/path} revealed (read at each
    call, so a rotated token is picked up); a secret's own text is never read as a template."""
    out, start = [], 0
    for match in SECRET.finditer(template):
        out.append(fill(template[start : match.start()], fields))
        out.append(reveal(match.group(0)))
        start = match.end()
    out.append(fill(template[start:], fields))
    return "".join(out)


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response | Result:
    """One request through `outbound` (answers capped, no redirects); a failure to get an answer is a retry."""
    try:
        return await outbound.fetch(http, method, url, content=content, headers=headers)
    except outbound.Unreachable as error:
        reason = "it did not answer in time" if "Timeout" in str(error) else f"{error}"
        return Result.retry(f"{what} cannot be reached ({reason})")
    except outbound.OutboundError as error:
        return Result.failed(f"{what}: {error}")


def json_body(response: Any) -> dict[str, Any]:
    """The answer's JSON object, or {} for anything else."""
    try:
        value = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
