"""The API account: its private key (read from a 0600 file, never logged), client id and key id, and the client
assertion made from them with PyJWT, reused until shortly before it expires."""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

AUDIENCE = "https://account.apple.com/auth/oauth2/v2/token"
TOKEN_URL = "https://account.apple.com/auth/oauth2/token"
PRODUCTS = ("school", "business")
API_URLS = {"school": "https://api-school.apple.com/v1/", "business": "https://api-business.apple.com/v1/"}
SCOPES = {"school": "school.api", "business": "business.api"}
CLIENT_PREFIXES = {"school": "SCHOOLAPI.", "business": "BUSINESSAPI."}
NAMES = {"school": "Apple School Manager", "business": "Apple Business Manager"}
MAX_ASSERTION_DAYS = 180
ASSERTION_LIFETIME = 179 * 86400.0  # a day under Apple's 180, so a clock a little ahead is still believed
RENEW_BEFORE = 86400.0
MAX_KEY_BYTES = 64 * 1024


class CredentialsError(Exception):
    """The API account cannot be used; the message says what to fix and never holds the key."""


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The API account's P-256 private key from its PEM file, which only its owner may read (0600)."""
    where = f"the API key file {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CredentialsError(
            f"{where} does not exist: download the key of the API account (Preferences › API in Apple School "
            "Manager, or Apple Business Manager) and write its full path as key_file"
        ) from None
    except OSError as error:
        raise CredentialsError(f"cannot read {where}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError(f"{where} is not a file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise CredentialsError(
            f"{where} can be read by other users (mode {mode:04o}): it controls your organisation's devices; "
            f"run `chmod 600 {path}`"
        )
    if info.st_uid != os.getuid():
        raise CredentialsError(f"{where} belongs to another user: `chown` it to the user the station runs as")
    if info.st_size > MAX_KEY_BYTES:
        raise CredentialsError(f"{where} is {info.st_size:,} bytes: not an API key (a few hundred bytes of PEM)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CredentialsError(
            f"{where} is not an unencrypted PEM private key: use the .pem file Apple gave for the API account"
        ) from None
    except OSError as error:
        raise CredentialsError(f"cannot read {where}: {error.strerror}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CredentialsError(f"{where} holds another kind of key: an API account's key is an EC P-256 key")
    return key


@dataclass(frozen=True)
class ApiAccount:
    """An Apple School/Business Manager API account."""

    product: str
    client_id: str
    key_id: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def scope(self) -> str:
        return SCOPES[self.product]

    @property
    def service(self) -> str:
        return NAMES[self.product]


def client_id_problem(product: str, client_id: str) -> str | None:
    prefix = CLIENT_PREFIXES[product]
    if not client_id.startswith(prefix) or len(client_id) <= len(prefix):
        return (
            f'an {NAMES[product]} client id starts with "{prefix}" (it is shown with the API account); '
            f'for the other product write product = "{"business" if product == "school" else "school"}"'
        )
    return None


class Assertion:
    """The client assertion (an ES256 JWT): made once and reused until a day before it expires."""

    def __init__(self, account: ApiAccount, *, clock: Callable[[], float] = time.time) -> None:
        self.account = account
        self.clock = clock
        self._token: str | None = None
        self._expires = 0.0

    def current(self) -> str:
        now = self.clock()
        if self._token is None or now >= self._expires - RENEW_BEFORE:
            issued = int(now)
            self._expires = issued + ASSERTION_LIFETIME
            claims = {
                "iss": self.account.client_id,
                "sub": self.account.client_id,
                "aud": AUDIENCE,
                "iat": issued,
                "exp": int(self._expires),
                "jti": str(uuid.uuid4()),
            }
            # Apple's sample header carries alg and kid only: PyJWT's default "typ" is left out.
            self._token = jwt.encode(
                claims, self.account.key, algorithm="ES256", headers={"kid": self.account.key_id, "typ": None}
            )
        return self._token
