"""A fake MDM's "Apple Configurator enrollment URL": it serves the enrollment profile a station stores on each iPad.

Real MDMs (Jamf, Mosyle, Intune, ...) give an enrollment URL for Apple Configurator that answers a .mobileconfig
(`application/x-apple-aspen-config`) holding a `com.apple.mdm` payload. Besides `/enroll`, this fake offers the
broken answers a station must survive: `/missing` (404), `/garbage` (an HTML page with 200), `/no-mdm` (a valid
profile without an MDM payload) and `/unavailable` (503).
"""

from __future__ import annotations

import plistlib
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ASPEN = "application/x-apple-aspen-config"


def enrollment_profile(organization: str, server_url: str, mdm_payload: bool = True) -> bytes:
    """An MDM enrollment profile, as an MDM's enrollment URL returns it (unsigned)."""
    ns = uuid.uuid5(uuid.NAMESPACE_URL, server_url)
    content = []
    if mdm_payload:
        content.append(
            {
                "PayloadType": "com.apple.mdm",
                "PayloadIdentifier": "com.example.mdm.enroll.mdm",
                "PayloadUUID": str(uuid.uuid5(ns, "mdm")),
                "PayloadVersion": 1,
                "ServerURL": f"{server_url}/mdm/server",
                "CheckInURL": f"{server_url}/mdm/checkin",
                "Topic": "com.apple.mgmt.External.00000000-0000-0000-0000-000000000000",
                "IdentityCertificateUUID": str(uuid.uuid5(ns, "identity")),
                "AccessRights": 8191,
                "SignMessage": True,
            }
        )
    profile = {
        "PayloadType": "Configuration",
        "PayloadIdentifier": "com.example.mdm.enroll",
        "PayloadUUID": str(ns),
        "PayloadVersion": 1,
        "PayloadDisplayName": f"{organization} MDM enrollment",
        "PayloadOrganization": organization,
        "PayloadContent": content,
    }
    return plistlib.dumps(profile)


def mdm_app(organization: str = "Example School") -> Starlette:
    """The fake MDM; `requests` counts what was asked, for tests."""
    requests: list[str] = []

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def enroll(request: Request) -> Response:
        requests.append("enroll")
        return Response(enrollment_profile(organization, base(request)), media_type=ASPEN)

    async def no_mdm(request: Request) -> Response:
        requests.append("no-mdm")
        return Response(enrollment_profile(organization, base(request), mdm_payload=False), media_type=ASPEN)

    async def missing(request: Request) -> Response:
        requests.append("missing")
        return Response("Not Found", status_code=404, media_type="text/plain")

    async def garbage(request: Request) -> Response:
        requests.append("garbage")
        return Response("<html><body>Please sign in</body></html>", media_type="text/html")

    async def unavailable(request: Request) -> Response:
        requests.append("unavailable")
        return Response("Service Unavailable", status_code=503, media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/enroll", enroll),
            Route("/no-mdm", no_mdm),
            Route("/missing", missing),
            Route("/garbage", garbage),
            Route("/unavailable", unavailable),
        ]
    )
    app.state.requests = requests
    return app
