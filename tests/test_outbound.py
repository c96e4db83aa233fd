"""The enrollment fetch against loopback servers: redirects only to the same host over https, a size cap, and
messages that show URLs only redacted."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from stationd import outbound
from stationd.emulator.mdm_server import ASPEN, enrollment_profile
from stationd.errors import EnrollmentInvalid, EnrollmentUnavailable
from stationd.httpserve import HTTPServer
from stationd.pipeline.steps import fetch_enrollment_profile
from stationd.redact import redact, redact_text, redact_url

SECRET = "s3cret-invitation"


def mdm() -> Starlette:
    async def profile(request: Request) -> Response:
        return Response(enrollment_profile("Org", "https://mdm.example"), media_type=ASPEN)

    async def elsewhere(request: Request) -> Response:
        return RedirectResponse(f"https://evil.example/enroll?invitation={SECRET}", status_code=302)

    async def relative(request: Request) -> Response:
        return RedirectResponse("/profile", status_code=301)

    async def huge(request: Request) -> Response:
        return Response(b"<" * (outbound.MAX_ANSWER + 1), media_type=ASPEN)

    async def endless(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(1000):
                yield b"x" * 65536

        return StreamingResponse(chunks(), media_type=ASPEN)

    async def upgrade(request: Request) -> Response:
        return RedirectResponse(str(request.url.replace(scheme="https", path="/profile")), status_code=307)

    return Starlette(
        routes=[
            Route("/profile", profile),
            Route("/elsewhere", elsewhere),
            Route("/relative", relative),
            Route("/huge", huge),
            Route("/endless", endless),
            Route("/upgrade", upgrade),
        ]
    )


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    http_server = HTTPServer(mdm())
    url = await http_server.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            yield url.replace("http://", f"http://user:{SECRET}@"), http
    finally:
        await http_server.stop()


@pytest.mark.anyio
async def test_redirects_to_another_host_or_to_plain_http_are_refused_naming_the_target() -> None:
    async with server() as (base, http):
        assert b"com.apple.mdm" in await fetch_enrollment_profile(http, f"{base}/profile?invitation={SECRET}")
        with pytest.raises(EnrollmentInvalid) as other_host:
            await fetch_enrollment_profile(http, f"{base}/elsewhere?invitation={SECRET}")
        with pytest.raises(EnrollmentInvalid) as plain:
            await fetch_enrollment_profile(http, f"{base}/relative")
        with pytest.raises(EnrollmentUnavailable) as upgraded:
            await fetch_enrollment_profile(http, f"{base}/upgrade")
    message = str(other_host.value)
    assert "redirected to https://evil.example/enroll?invitation=***" in message
    assert "only to the same host over https" in message and SECRET not in message
    assert "redirected to http://***@127.0.0.1:" in str(plain.value) and "/profile" in str(plain.value)
    # The same host over https is followed (and then finds no TLS on this plain port).
    assert "cannot be reached" in str(upgraded.value) and SECRET not in str(upgraded.value)


@pytest.mark.anyio
async def test_answers_larger_than_the_cap_are_refused_without_buffering_them() -> None:
    async with server() as (base, http):
        with pytest.raises(EnrollmentInvalid) as declared:
            await fetch_enrollment_profile(http, f"{base}/huge")
        with pytest.raises(EnrollmentInvalid) as streamed:
            await fetch_enrollment_profile(http, f"{base}/endless?invitation={SECRET}")
    assert "answered 1,048,577 bytes, more than the 1,048,576" in str(declared.value)
    assert "more than the 1,048,576 bytes" in str(streamed.value) and SECRET not in str(streamed.value)


@pytest.mark.anyio
async def test_an_unreachable_url_is_named_without_its_credentials() -> None:
    async with server() as (base, http):
        pass
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(EnrollmentUnavailable) as gone:
            await fetch_enrollment_profile(http, f"{base}/profile?invitation={SECRET}&a=1")
    message = str(gone.value)
    assert SECRET not in message and "user" not in message
    assert "http://***@127.0.0.1:" in message and "/profile?invitation=***&a=***" in message


def test_redaction_keeps_server_and_path_and_masks_userinfo_query_and_fragment() -> None:
    assert redact_url("https://u:p@mdm.example:8443/enroll?invitation=T&x#f") == (
        "https://***@mdm.example:8443/enroll?invitation=***&***#***"
    )
    assert redact_url("https://mdm.example/enroll") == "https://mdm.example/enroll"
    text = "GET (https://a.example/x?token=T), then http://b@c.example/."
    assert redact_text(text) == "GET (https://a.example/x?token=***), then http://***@c.example/."
    assert redact({"m": ["see https://h/?k=v"], "n": 3}) == {"m": ["see https://h/?k=***"], "n": 3}


def test_plain_http_is_warned_about_unless_it_stays_on_this_machine() -> None:
    warning = outbound.plain_http_warning("enrollment.url", "http://mdm.example/enroll")
    assert warning is not None and warning.startswith("warning: enrollment.url uses http:// to mdm.example")
    assert outbound.plain_http_warning("enrollment.url", "https://mdm.example/enroll") is None
    assert outbound.plain_http_warning("enrollment.url", "http://127.0.0.1:7782/enroll") is None
    assert outbound.plain_http_warning("enrollment.url", "http://localhost/enroll") is None
