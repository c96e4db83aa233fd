"""The supervision identity: the organisation's certificate and private key, kept in one PEM file.

pymobiledevice3 (`escalate`, `pair_supervised`) reads that PEM "keybag": certificate plus unencrypted key.
Whoever holds the key can supervise, pair with and reconfigure every iPad of the organisation, so the file
must be readable by its owner only.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID

from stationd.files import write_private_file

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

VALIDITY = dt.timedelta(days=3650)
_HOW_TO_GET_ONE = (
    "create one with `stationd identity create --org NAME`, or import the one Apple Configurator exported "
    "with `stationd identity import FILE`"
)


class IdentityError(Exception):
    """The supervision identity is missing, unreadable or unusable."""


class PasswordRequired(IdentityError):
    """The file to import is encrypted and no password was given."""


@dataclass(frozen=True)
class Identity:
    """A loaded supervision identity."""

    path: Path
    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False, compare=False)

    @property
    def organization(self) -> str:
        """The organisation named in the certificate (O, else CN)."""
        for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME):
            names = self.certificate.subject.get_attributes_for_oid(oid)
            if names:
                return str(names[0].value)
        return ""

    @property
    def certificate_der(self) -> bytes:
        """The certificate as DER, as sent in `SupervisorHostCertificates` and `Escalate`."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint_sha256(self) -> str:
        """SHA-256 of the certificate, colon-separated hex (as `openssl x509 -fingerprint` shows it)."""
        return self.certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    @property
    def not_valid_after(self) -> dt.datetime:
        """Expiry of the certificate (UTC)."""
        return self.certificate.not_valid_after_utc

    def sign(self, data: bytes) -> bytes:
        """Sign an Escalate or pairing challenge: DER PKCS#7 with the data embedded, as pymobiledevice3 does."""
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(data)
            .add_signer(self.certificate, self.private_key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )


def supervisor_certificate(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, org: str) -> x509.Certificate:
    """A self-signed supervision certificate for `org`, shaped like pymobiledevice3's (CN and O, no extensions)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, org),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .sign(key, hashes.SHA256())
    )


def create_identity(path: Path | str, org: str, force: bool = False) -> Identity:
    """Generate a new self-signed supervision identity for `org` and write it to `path` (mode 0600)."""
    if not org.strip():
        raise IdentityError("the organisation name is empty; give it with --org NAME")
    path = Path(path)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = supervisor_certificate(key, org)
    return _save(path, certificate, key, force)


def import_identity(source: Path | str, dest: Path | str, password: str | None = None, force: bool = False) -> Identity:
    """Convert a .p12/.pfx or PEM identity into the station's PEM file at `dest` (mode 0600).

    Raises `PasswordRequired` when the source is encrypted and `password` is None.
    """
    source = Path(source)
    try:
        data = source.read_bytes()
    except OSError as error:
        raise IdentityError(f"cannot read {source}: {error.strerror}") from None
    if b"-----BEGIN" in data:
        certificate, key = _read_pem(data, source, password)
    else:
        certificate, key = _read_p12(data, source, password)
    _check(certificate, key, source)
    return _save(Path(dest), certificate, key, force)


def load_identity(path: Path | str) -> Identity:
    """Load and check the station's PEM identity file."""
    path = Path(path)
    if not path.exists():
        raise IdentityError(f"no supervision identity at {path}: {_HOW_TO_GET_ONE}")
    _check_permissions(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise IdentityError(f"cannot read {path}: {error.strerror}") from None
    try:
        certificate, key = _read_pem(data, path, None)
    except PasswordRequired:
        raise IdentityError(
            f"the private key in {path} is encrypted; convert it with "
            f"`stationd identity import {path} --out NEW.pem` (it asks for the password)"
        ) from None
    _check(certificate, key, path)
    return Identity(path=path, certificate=certificate, private_key=key)


def _save(path: Path, certificate: x509.Certificate, key: PrivateKey, force: bool) -> Identity:
    pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        write_private_file(path, pem, force)
    except FileExistsError:
        raise IdentityError(
            f"{path} already exists; use --force to replace it (iPads supervised with the old identity "
            "will no longer accept this station)"
        ) from None
    except OSError as error:
        raise IdentityError(f"cannot write {path}: {error.strerror}") from None
    return Identity(path=path, certificate=certificate, private_key=key)


def _read_p12(data: bytes, source: Path, password: str | None) -> tuple[x509.Certificate, PrivateKey]:
    attempts = [password.encode()] if password is not None else [None, b""]
    for attempt in attempts:
        try:
            key, certificate, others = pkcs12.load_key_and_certificates(data, attempt)
            break
        except ValueError as error:
            if "password" not in str(error).lower():
                raise IdentityError(f"{source} is neither a .p12/.pfx file nor a PEM file") from None
    else:
        if password is None:
            raise PasswordRequired(f"{source} is protected by a password")
        raise IdentityError(f"wrong password for {source}")
    if key is None:
        raise IdentityError(
            f"{source} holds no private key; export the supervision identity from Apple Configurator "
            "(Settings > Organizations > Export Supervision Identity), not only its certificate"
        )
    key = _usable_key(key, source)
    matching = [cert for cert in [certificate, *others] if cert is not None and _public_der(cert) == _public_der(key)]
    if not matching:
        raise IdentityError(f"{source} holds no certificate for its private key; export the supervision identity again")
    return matching[0], key


def _read_pem(data: bytes, source: Path, password: str | None) -> tuple[x509.Certificate, PrivateKey]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise IdentityError(f"{source} holds no certificate (expected a PEM 'BEGIN CERTIFICATE' block)") from None
    if b"PRIVATE KEY-----" not in data:
        raise IdentityError(f"{source} holds no private key; it needs the certificate and its key in one file")
    try:
        key = serialization.load_pem_private_key(data, None)
    except TypeError:
        if password is None:
            raise PasswordRequired(f"the private key in {source} is protected by a password") from None
        try:
            key = serialization.load_pem_private_key(data, password.encode())
        except ValueError:
            raise IdentityError(f"wrong password for {source}") from None
    except ValueError:
        raise IdentityError(f"the private key in {source} cannot be read") from None
    key = _usable_key(key, source)
    public = _public_der(key)
    for certificate in certificates:
        if _public_der(certificate) == public:
            return certificate, key
    return certificates[0], key


def _usable_key(key: object, source: Path) -> PrivateKey:
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise IdentityError(f"the key in {source} is {type(key).__name__}; a supervision identity needs RSA or EC")
    return key


def _check(certificate: x509.Certificate, key: PrivateKey, source: Path) -> None:
    if _public_der(certificate) != _public_der(key):
        raise IdentityError(f"the private key in {source} does not belong to its certificate")
    expiry = certificate.not_valid_after_utc
    if expiry < dt.datetime.now(dt.UTC):
        raise IdentityError(
            f"the certificate in {source} expired on {expiry:%Y-%m-%d}; iPads refuse an expired supervision "
            f"identity: {_HOW_TO_GET_ONE}"
        )


def _check_permissions(path: Path) -> None:
    if os.name != "posix":
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise IdentityError(
            f"{path} can be read by other users (mode {mode:04o}); this key controls every supervised iPad: "
            f"run `chmod 600 {path}`"
        )


def _public_der(item: x509.Certificate | PrivateKey) -> bytes:
    return item.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
