"""The shared TLS settings: errors name the field, secrets come from files and environment."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from clustertwin.stack.mosquitto import Mosquitto
from clustertwin.stack.pki import Authority
from connectors.sdk.tls import ClientTls, ServerTls, TlsError


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = Authority.create("unit CA")
    cert, key = ca.issue("svc", hosts=("127.0.0.1",)).write(tmp_path, "svc", b"pw-1234")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.credential.cert_pem())
    return {"cert": cert, "key": key, "ca": ca_file}


def test_a_certificate_needs_its_key_and_a_password_needs_a_key() -> None:
    with pytest.raises(ValidationError, match="cert_file and key_file: give both"):
        ClientTls(cert_file=Path("c.pem"))
    with pytest.raises(ValidationError, match="key_password_env: needs key_file"):
        ClientTls(key_password_env="X")
    with pytest.raises(ValidationError, match="min_version"):
        ClientTls.model_validate({"min_version": "1.0"})


def test_defaults_verify_the_server_and_its_name() -> None:
    ctx = ClientTls().context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_key_password_comes_from_the_environment(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = ServerTls(cert_file=files["cert"], key_file=files["key"], key_password_env="CT_PW")
    monkeypatch.delenv("CT_PW", raising=False)
    with pytest.raises(TlsError, match=r"tls\.key_password_env: environment variable \$CT_PW"):
        tls.context()
    monkeypatch.setenv("CT_PW", "wrong")
    with pytest.raises(TlsError, match=r"tls\.cert_file/key_file: cannot load"):
        tls.context()
    monkeypatch.setenv("CT_PW", "pw-1234")
    assert tls.context().minimum_version == ssl.TLSVersion.TLSv1_2


def test_mutual_tls_requires_client_certificates(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_PW", "pw-1234")
    tls = ServerTls(
        cert_file=files["cert"],
        key_file=files["key"],
        key_password_env="CT_PW",
        client_ca_file=files["ca"],
        min_version="1.3",
    )
    ctx = tls.context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


def test_unreadable_ca_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match=r"tls\.ca_file: cannot load CA certificates"):
        ClientTls(ca_file=tmp_path / "missing.pem").context()


def test_stack_mosquitto_tls_listener_requires_client_certificates(tmp_path: Path) -> None:
    broker = Mosquitto(port=1999, root=tmp_path, tls_port=8999)
    argv = broker.command()
    conf = Path(argv[-1]).read_text()
    assert "listener 8999 127.0.0.1\n" in conf
    assert "require_certificate true\n" in conf and "tls_version tlsv1.2\n" in conf
    assert f"cafile {broker.tls.ca_file}\n" in conf
    assert broker.tls.ca_file.is_file() and broker.tls.key("server").stat().st_mode & 0o077 == 0
    plain = Mosquitto(port=1998, root=tmp_path / "plain")
    assert "require_certificate" not in Path(plain.command()[-1]).read_text()
