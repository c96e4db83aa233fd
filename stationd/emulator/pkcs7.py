"""Verify the PKCS#7 signatures a host sends to prove it holds a supervision identity.

Hosts sign the device's challenge (Escalate, supervised Pair) with their supervisor key as CMS SignedData with the
content embedded. cryptography can build these but not verify them, so this reads the few DER fields needed.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

OID_MESSAGE_DIGEST = bytes.fromhex("2a864886f70d010904")  # 1.2.840.113549.1.9.4
DIGESTS = {
    bytes.fromhex("608648016503040201"): (hashes.SHA256, hashlib.sha256),
    bytes.fromhex("608648016503040202"): (hashes.SHA384, hashlib.sha384),
    bytes.fromhex("608648016503040203"): (hashes.SHA512, hashlib.sha512),
    bytes.fromhex("2b0e03021a"): (hashes.SHA1, hashlib.sha1),
}


class SignatureInvalid(Exception):
    """The signature is malformed, does not cover the expected content, or no trusted certificate made it."""


def _read(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Read one DER header at pos: return (tag, start of value, end of value, end of header)."""
    if pos + 2 > len(data):
        raise SignatureInvalid("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise SignatureInvalid("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise SignatureInvalid("DER value runs past the end")
    return tag, pos, pos + length, pos


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The TLVs inside [start, end) as (tag, header start, value start, value end)."""
    items = []
    pos = start
    while pos < end:
        tag, vstart, vend, _ = _read(data, pos)
        items.append((tag, pos, vstart, vend))
        pos = vend
    return items


def verify_signed_challenge(signed: bytes, challenge: bytes, trusted: list[bytes]) -> bytes:
    """Check that `signed` is SignedData over exactly `challenge` by one of the `trusted` DER certificates.

    Returns the DER of the certificate that verified; raises SignatureInvalid otherwise.
    """
    try:
        return _verify(bytes(signed), bytes(challenge), trusted)
    except (IndexError, ValueError) as e:
        raise SignatureInvalid(f"malformed PKCS#7: {e}") from e


def _verify(signed: bytes, challenge: bytes, trusted: list[bytes]) -> bytes:
    tag, start, end, _ = _read(signed, 0)
    content_info = _children(signed, start, end)
    if tag != 0x30 or len(content_info) < 2 or content_info[1][0] != 0xA0:
        raise SignatureInvalid("not a CMS ContentInfo")
    _, _, explicit_start, explicit_end = content_info[1]
    tag, sd_start, sd_end, _ = _read(signed, explicit_start)
    signed_data = _children(signed, sd_start, sd_end)
    encap = signed_data[2]
    encap_items = _children(signed, encap[2], encap[3])
    if len(encap_items) < 2:
        raise SignatureInvalid("the signature does not embed its content")
    _, octet_start, octet_end, _ = _read(signed, encap_items[1][2])
    content = signed[octet_start:octet_end]
    if content != challenge:
        raise SignatureInvalid("the signature covers other data than the challenge")
    signer_infos = signed_data[-1]
    if signer_infos[0] != 0x31:
        raise SignatureInvalid("no signer infos")
    for _, _, si_start, si_end in _children(signed, signer_infos[2], signer_infos[3]):
        fields = _children(signed, si_start, si_end)
        digest_oid = signed[_read(signed, fields[2][2])[1] : _read(signed, fields[2][2])[2]]
        if digest_oid not in DIGESTS:
            raise SignatureInvalid("unsupported digest algorithm")
        hash_cls, hashlib_fn = DIGESTS[digest_oid]
        index = 3
        signed_bytes = content
        if fields[3][0] == 0xA0:
            attrs_tag, attrs_header, attrs_start, attrs_end = fields[3]
            signed_bytes = b"\x31" + signed[attrs_header + 1 : attrs_end]
            if _message_digest(signed, attrs_start, attrs_end) != hashlib_fn(content).digest():
                raise SignatureInvalid("message digest does not match the content")
            index = 4
        signature_field = fields[index + 1]
        signature = signed[signature_field[2] : signature_field[3]]
        for der in trusted:
            if _check(x509.load_der_x509_certificate(der), signature, signed_bytes, hash_cls()):
                return der
    raise SignatureInvalid("not signed by a supervisor certificate this device trusts")


def _message_digest(data: bytes, start: int, end: int) -> bytes:
    for _, _, a_start, a_end in _children(data, start, end):
        oid_item, values = _children(data, a_start, a_end)[:2]
        if data[oid_item[2] : oid_item[3]] == OID_MESSAGE_DIGEST:
            _, v_start, v_end, _ = _read(data, values[2])
            return data[v_start:v_end]
    raise SignatureInvalid("signed attributes carry no message digest")


def _check(cert: x509.Certificate, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm) -> bool:
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True
