"""Bearer-token check for the API's mutating endpoints; the token is compared in constant time and never logged."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse

NOT_CONFIGURED = (
    "actions through the API are turned off: set [api] token in the station's configuration file "
    "(make one with: openssl rand -hex 24) and restart the station"
)


def refusal(request: Request, token: str | None) -> JSONResponse | None:
    """None when the request carries the configured token, else the 401 or 403 response to send."""
    if not token:
        return JSONResponse({"error": NOT_CONFIGURED}, status_code=403)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return JSONResponse(
            {"error": "this action needs the API token: send the header Authorization: Bearer <token>"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="stationd"'},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return JSONResponse(
            {"error": "wrong API token: use the value of [api] token from the station's configuration"},
            status_code=403,
            headers={"WWW-Authenticate": 'Bearer realm="stationd", error="invalid_token"'},
        )
    return None
