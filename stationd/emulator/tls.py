"""The device side of lockdown TLS: present the DeviceCertificate the host issued, trust only that host's certificates.

Pairing certificates have empty subject and issuer, so OpenSSL chain building sees each as self-signed. The device
therefore trusts exactly the certificates of the stored pair record (the host certificate that pymobiledevice3
presents, the root certificate that libimobiledevice presents) as partial-chain anchors.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import Any


def device_tls_context(device_key_pem: bytes, pair_record: dict[str, Any]) -> ssl.SSLContext:
    """A server-side context for one device and one paired host."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ssl.OPENSSL_VERSION.lower().startswith("openssl"):
        context.set_ciphers("ALL:!aNULL:!eNULL:@SECLEVEL=0")
    fd, path = tempfile.mkstemp(prefix="stationd-device-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(pair_record["DeviceCertificate"]) + b"\n" + device_key_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    anchors = [bytes(pair_record[k]).decode() for k in ("HostCertificate", "RootCertificate") if pair_record.get(k)]
    context.load_verify_locations(cadata="\n".join(anchors))
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
