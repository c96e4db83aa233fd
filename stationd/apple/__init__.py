"""Apple School Manager and Apple Business (Manager) through their official API: the API account's credentials,
a client that keeps to Apple's budgets, and the verified assignment of serials to an MDM server.

Facts relied on (shared/reference/apple-provisioning.md, as corrected by issue 11): JSON:API bodies with
`Accept: application/json`; an ES256 client assertion (kid; iss = sub = client id; aud; iat; exp at most 180 days
later; jti) traded for a bearer token valid 3600 s; `POST /v1/orgDeviceActivities` (ASSIGN_DEVICES) polled until
COMPLETED, FAILED or STOPPED, whose COMPLETED proves nothing per serial: its `downloadUrl` log (serial, status,
substatus) does, with `GET /v1/orgDevices/{serial}/relationships/assignedServer` for serials the log leaves open.
Observed (undocumented) limits: about 10 POST an hour and 20 GET a minute, 429 with Retry-After past them.
"""
