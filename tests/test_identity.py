"""The supervision identity: create, import, load, sign, and the `stationd identity` commands."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from stationd.cli import app
from stationd.identity import (
    IdentityError,
    PasswordRequired,
    create_identity,
    import_identity,
    load_identity,
)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def identity(tmp_path):
    return create_identity(tmp_path / "identity.pem", "Example School")


@pytest.fixture
def p12(tmp_path, identity):
    """A password-protected .p12 holding the identity, as Apple Configurator exports it."""
    path = tmp_path / "export.p12"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"Example School",
            identity.private_key,
            identity.certificate,
            None,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    return path


def self_signed(key, days_valid=30, days_ago=0):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old School")])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days_valid))
        .sign(key, hashes.SHA256())
    )


def write_pem(path, certificate, key):
    path.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def test_create_writes_a_private_pem_that_loads(tmp_path, identity):
    path = tmp_path / "identity.pem"
    assert mode(path) == 0o600
    loaded = load_identity(path)
    assert loaded.organization == "Example School"
    assert loaded.certificate == identity.certificate
    assert loaded.fingerprint_sha256 == identity.fingerprint_sha256
    assert len(loaded.fingerprint_sha256.split(":")) == 32
    assert isinstance(loaded.private_key, rsa.RSAPrivateKey)
    assert loaded.private_key.key_size == 2048


def test_created_certificate_names_the_organisation_for_ten_years(identity):
    subject = identity.certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Example School"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example School"
    remaining = identity.not_valid_after - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=3640) < remaining <= dt.timedelta(days=3650)
    assert identity.certificate_der == identity.certificate.public_bytes(serialization.Encoding.DER)


def test_file_loads_the_way_pymobiledevice3_reads_its_keybag(tmp_path, identity):
    data = (tmp_path / "identity.pem").read_bytes()
    key = serialization.load_pem_private_key(data, password=None)
    certificate = x509.load_pem_x509_certificate(data)
    assert certificate == identity.certificate
    assert isinstance(key, rsa.RSAPrivateKey)


def test_repr_hides_the_private_key(identity):
    assert "private_key" not in repr(identity)


def test_create_refuses_to_overwrite_without_force(tmp_path, identity):
    with pytest.raises(IdentityError, match="already exists; use --force"):
        create_identity(tmp_path / "identity.pem", "Other")
    replaced = create_identity(tmp_path / "identity.pem", "Other", force=True)
    assert load_identity(tmp_path / "identity.pem").fingerprint_sha256 == replaced.fingerprint_sha256
    assert mode(tmp_path / "identity.pem") == 0o600


def test_force_tightens_a_loose_file(tmp_path, identity):
    path = tmp_path / "identity.pem"
    path.chmod(0o644)
    create_identity(path, "Example School", force=True)
    assert mode(path) == 0o600


def test_sign_embeds_the_data_and_the_certificate(identity):
    signature = identity.sign(b"8bytes!!")
    assert pkcs7.load_der_pkcs7_certificates(signature) == [identity.certificate]
    assert b"8bytes!!" in signature


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_signature_verifies_with_openssl(tmp_path, identity):
    (tmp_path / "signature.der").write_bytes(identity.sign(b"challenge"))
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            "signature.der",
            "-binary",
            "-noverify",
            "-out",
            "content.bin",
        ],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "content.bin").read_bytes() == b"challenge"


def test_missing_file_says_how_to_get_one(tmp_path):
    with pytest.raises(IdentityError) as caught:
        load_identity(tmp_path / "nope.pem")
    assert "stationd identity create --org NAME" in str(caught.value)
    assert "stationd identity import FILE" in str(caught.value)


def test_loose_permissions_are_refused(tmp_path, identity):
    path = tmp_path / "identity.pem"
    path.chmod(0o640)
    with pytest.raises(IdentityError, match=f"chmod 600 {path}"):
        load_identity(path)


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path, identity):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "mixed.pem"
    write_pem(path, identity.certificate, other)
    with pytest.raises(IdentityError, match="does not belong to its certificate"):
        load_identity(path)


def test_expired_certificate_is_refused(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "old.pem"
    write_pem(path, self_signed(key, days_valid=10, days_ago=20), key)
    with pytest.raises(IdentityError, match="expired on"):
        load_identity(path)


def test_encrypted_key_in_the_station_file_is_refused_with_a_fix(tmp_path, identity):
    path = tmp_path / "encrypted.pem"
    path.write_bytes(
        identity.certificate.public_bytes(serialization.Encoding.PEM)
        + identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="is encrypted; convert it with `stationd identity import"):
        load_identity(path)


def test_file_without_key_is_refused(tmp_path, identity):
    path = tmp_path / "cert-only.pem"
    path.write_bytes(identity.certificate.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="holds no private key"):
        load_identity(path)


def test_import_p12_with_the_right_password(tmp_path, identity, p12):
    dest = tmp_path / "station" / "identity.pem"
    imported = import_identity(p12, dest, "s3cret")
    assert mode(dest) == 0o600
    assert imported.fingerprint_sha256 == identity.fingerprint_sha256
    assert load_identity(dest).organization == "Example School"


def test_import_p12_with_a_wrong_password(tmp_path, p12):
    with pytest.raises(IdentityError, match=f"wrong password for {p12}"):
        import_identity(p12, tmp_path / "out.pem", "guess")
    assert not (tmp_path / "out.pem").exists()


def test_import_p12_without_a_password_asks_for_one(tmp_path, p12):
    with pytest.raises(PasswordRequired):
        import_identity(p12, tmp_path / "out.pem", None)


def test_import_unprotected_p12(tmp_path, identity):
    source = tmp_path / "open.p12"
    source.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"x", identity.private_key, identity.certificate, None, serialization.NoEncryption()
        )
    )
    assert import_identity(source, tmp_path / "out.pem").certificate == identity.certificate


def test_import_p12_without_key_is_refused(tmp_path, identity):
    source = tmp_path / "cert.p12"
    source.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"x", None, identity.certificate, None, serialization.BestAvailableEncryption(b"pw")
        )
    )
    with pytest.raises(IdentityError, match="holds no private key"):
        import_identity(source, tmp_path / "out.pem", "pw")


def test_import_garbage_is_refused(tmp_path):
    source = tmp_path / "junk.p12"
    source.write_bytes(b"\x00\x01 not a certificate")
    with pytest.raises(IdentityError, match="neither a .p12/.pfx file nor a PEM file"):
        import_identity(source, tmp_path / "out.pem", "pw")


def test_import_pem_with_encrypted_key(tmp_path, identity):
    source = tmp_path / "encrypted.pem"
    source.write_bytes(
        identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        + identity.certificate.public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(PasswordRequired):
        import_identity(source, tmp_path / "out.pem")
    with pytest.raises(IdentityError, match="wrong password"):
        import_identity(source, tmp_path / "out.pem", "bad")
    imported = import_identity(source, tmp_path / "out.pem", "pw")
    assert imported.certificate == identity.certificate
    assert load_identity(tmp_path / "out.pem").certificate == identity.certificate


def test_import_refuses_to_overwrite_without_force(tmp_path, identity, p12):
    with pytest.raises(IdentityError, match="already exists"):
        import_identity(p12, tmp_path / "identity.pem", "s3cret")


def test_import_expired_identity_is_refused(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    source = tmp_path / "old.p12"
    source.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"x", key, self_signed(key, days_valid=1, days_ago=5), None, serialization.NoEncryption()
        )
    )
    with pytest.raises(IdentityError, match="expired"):
        import_identity(source, tmp_path / "out.pem")
    assert not (tmp_path / "out.pem").exists()


# The `stationd identity` commands.

runner = CliRunner()


@pytest.fixture
def station_dir(tmp_path, monkeypatch):
    """A config location in tmp_path, so default paths never touch the real system."""
    monkeypatch.setenv("STATIOND_CONFIG", str(tmp_path / "stationd.toml"))
    return tmp_path


def test_cli_create_and_show(station_dir):
    result = runner.invoke(app, ["identity", "create", "--org", "Lincoln Primary"])
    assert result.exit_code == 0, result.output
    path = station_dir / "identity.pem"
    assert mode(path) == 0o600
    shown = runner.invoke(app, ["identity", "show"])
    assert shown.exit_code == 0
    assert "Lincoln Primary" in shown.output
    assert load_identity(path).fingerprint_sha256 in shown.output
    assert "PRIVATE KEY" not in shown.output


def test_cli_create_refuses_to_overwrite(station_dir):
    runner.invoke(app, ["identity", "create", "--org", "A"])
    result = runner.invoke(app, ["identity", "create", "--org", "B"])
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert "Traceback" not in result.output
    assert runner.invoke(app, ["identity", "create", "--org", "B", "--force"]).exit_code == 0


def test_cli_import_with_password_from_environment(station_dir, p12, monkeypatch):
    monkeypatch.setenv("P12_PASSWORD", "s3cret")
    out = station_dir / "imported.pem"
    result = runner.invoke(app, ["identity", "import", str(p12), "--out", str(out), "--password-env", "P12_PASSWORD"])
    assert result.exit_code == 0, result.output
    assert "Example School" in result.output
    assert mode(out) == 0o600


def test_cli_import_prompts_for_the_password(station_dir, p12):
    out = station_dir / "imported.pem"
    result = runner.invoke(app, ["identity", "import", str(p12), "--out", str(out)], input="s3cret\n")
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert out.exists()


def test_cli_import_wrong_password(station_dir, p12):
    result = runner.invoke(app, ["identity", "import", str(p12), "--out", str(station_dir / "x.pem")], input="nope\n")
    assert result.exit_code == 2
    assert f"wrong password for {p12}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_import_unset_environment_variable(station_dir, p12, monkeypatch):
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    result = runner.invoke(app, ["identity", "import", str(p12), "--password-env", "NO_SUCH_VAR"])
    assert result.exit_code == 2
    assert "NO_SUCH_VAR is not set" in result.stderr


def test_cli_show_missing_and_loose_files(station_dir):
    missing = runner.invoke(app, ["identity", "show"])
    assert missing.exit_code == 2
    assert "stationd identity create" in missing.stderr
    path = station_dir / "identity.pem"
    create_identity(path, "X")
    os.chmod(path, 0o644)
    loose = runner.invoke(app, ["identity", "show", str(path)])
    assert loose.exit_code == 2
    assert "chmod 600" in loose.stderr
