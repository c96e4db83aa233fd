"""What the station asks of other servers (the MDM's enrollment URL, Apple's activation server), and on what terms.

- Answers are read up to a size cap (`MAX_ANSWER`): a server that sends more is refused, not buffered.
- Redirects are followed only when asked, only to the same host and only over https; any other redirect is
  refused with a message naming its target (redacted), so a compromised or misconfigured server cannot send the
  station, and the credentials in its URL, somewhere else.
- Errors never carry the URL itself: only `redact_url(url)` or the host.
"""

from __future__ import annotations

import httpx

from stationd.httpserve import is_loopback
from stationd.redact import redact_url

MAX_ANSWER = 1 << 20  # bytes; an enrollment profile is a few kB, an activation record tens of kB
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)


class OutboundError(Exception):
    """A request to another server did not give a usable answer; the message is safe to show."""


class Unreachable(OutboundError):
    """The server could not be reached, or stopped answering (worth retrying)."""


class BadAddress(OutboundError):
    """The configured address is not one httpx can use."""


class Refused(OutboundError):
    """The station refused the server's answer: a redirect it does not follow, or an answer too large."""


async def fetch(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    limit: int = MAX_ANSWER,
    follow_redirects: bool = False,
) -> httpx.Response:
    """Send one request and read its answer (at most `limit` bytes); follow same-host https redirects if asked."""
    target = _web_address(url)
    if target is None:
        raise BadAddress(f"{redact_url(url)} is not a valid web address")
    for _ in range(MAX_REDIRECTS + 1):
        response = await _send(http, method, target, content, headers, limit)
        if not follow_redirects or response.status_code not in REDIRECTS or "location" not in response.headers:
            return response
        target = _redirect_target(target, response.headers["location"])
        if response.status_code == 303:
            method, content = "GET", None
    raise Refused(f"{redact_url(url)} redirected more than {MAX_REDIRECTS} times")


def plain_http_warning(key: str, url: str) -> str | None:
    """A warning for an http:// URL that leaves this machine (its answers and credentials cross the network
    unencrypted and unauthenticated); None for https:// and for loopback."""
    parsed = _web_address(url)
    if parsed is None or parsed.scheme != "http" or is_loopback(parsed.host):
        return None
    return (
        f"warning: {key} uses http:// to {parsed.host}: what it answers (and any credentials in the URL) crosses "
        "the network unencrypted and can be changed on the way; use the https:// address"
    )


def _web_address(url: str) -> httpx.URL | None:
    """`url` parsed, if it is an http:// or https:// address with a host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    return parsed if parsed.scheme in ("http", "https") and parsed.host else None


async def _send(
    http: httpx.AsyncClient,
    method: str,
    target: httpx.URL,
    content: bytes | None,
    headers: dict[str, str] | None,
    limit: int,
) -> httpx.Response:
    shown = redact_url(str(target))
    try:
        request = http.build_request(method, target, content=content, headers=headers)
        response = await http.send(request, stream=True, follow_redirects=False)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        raise BadAddress(f"{shown} is not a valid web address ({type(error).__name__})") from None
    except httpx.HTTPError as error:
        raise Unreachable(type(error).__name__) from None
    try:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(f"{shown} answered {int(declared):,} bytes, more than the {limit:,} the station accepts")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise Refused(f"{shown} answered more than the {limit:,} bytes the station accepts")
    except httpx.HTTPError as error:
        raise Unreachable(type(error).__name__) from None
    finally:
        await response.aclose()
    return httpx.Response(response.status_code, headers=response.headers, content=bytes(body), request=request)


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    try:
        target = current.join(location)
    except httpx.InvalidURL:
        raise Refused(f"{redact_url(str(current))} redirected to an invalid address") from None
    if target.scheme != "https" or target.host.lower() != current.host.lower():
        raise Refused(
            f"{redact_url(str(current))} redirected to {redact_url(str(target))}: the station follows redirects "
            "only to the same host over https; write the final address in the configuration"
        )
    if current.userinfo and not target.userinfo:
        target = target.copy_with(userinfo=current.userinfo)
    return target
