"""remsim-pki: a CA, certificates with remsim's URI SANs, REST tokens stored as hashes."""

from __future__ import annotations

import hashlib
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from remsim_common import TransportSecurity, peer_uris
from remsim_common.pki import identity_uris, main


def _uris(pem: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def test_init_and_issue_every_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = tmp_path / "pki"
    assert main(["init", "--dir", str(pki)]) == 0
    assert main(["issue", "--dir", str(pki), "server", "--dns", "remsim.lab"]) == 0
    assert main(["issue", "--dir", str(pki), "api", "--ip", "127.0.0.1"]) == 0
    assert main(["issue", "--dir", str(pki), "bankd", "1"]) == 0
    assert main(["issue", "--dir", str(pki), "client", "23", "24"]) == 0
    assert _uris(pki / "server.pem") == ["urn:remsim:server"]
    assert _uris(pki / "api.pem") == ["urn:remsim:api"]
    assert _uris(pki / "bankd-1.pem") == ["urn:remsim:bankd:1"]
    assert _uris(pki / "client-23.pem") == ["urn:remsim:client:23", "urn:remsim:client:24"]
    for key in ("ca.key", "server.key", "bankd-1.key", "client-23.key"):
        assert stat.S_IMODE((pki / key).stat().st_mode) == 0o600
    assert main(["init", "--dir", str(pki)]) == 1  # never replaces a CA
    assert "refusing to replace a CA" in capsys.readouterr().err


def test_issued_certificates_do_mutual_tls(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    main(["init", "--dir", str(pki)])
    main(["issue", "--dir", str(pki), "bankd", "1"])
    main(["issue", "--dir", str(pki), "client", "23"])
    ca = pki / "ca.pem"
    bankd = TransportSecurity.mutual_tls(pki / "bankd-1.pem", pki / "bankd-1.key", ca)
    client = TransportSecurity.mutual_tls(pki / "client-23.pem", pki / "client-23.key", ca)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[tuple[str, ...]] = []

    def serve() -> None:
        tls = bankd.wrap_accepted(listener.accept()[0])
        seen.append(peer_uris(tls))
        tls.close()

    thread = threading.Thread(target=serve)
    thread.start()
    tls = client.wrap_connected(socket.create_connection(listener.getsockname()))
    assert peer_uris(tls) == ("urn:remsim:bankd:1",)
    tls.close()
    thread.join(5)
    listener.close()
    assert seen == [("urn:remsim:client:23",)]


def test_tokens_are_printed_once_and_stored_as_sha256(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    assert main(["token", "alice", "--role", "operator", "--file", str(tokens)]) == 0
    assert main(["token", "bob", "--role", "viewer", "--file", str(tokens)]) == 0
    alice, bob = capsys.readouterr().out.split()
    lines = tokens.read_text().splitlines()
    assert lines == [
        f"alice operator {hashlib.sha256(alice.encode()).hexdigest()}",
        f"bob viewer {hashlib.sha256(bob.encode()).hexdigest()}",
    ]
    assert alice not in tokens.read_text() and len(alice) >= 40
    # hex: a token is never taken for an option (``remsim-apitool --token -x…``) or quoted
    assert all(c in "0123456789abcdef" for c in alice + bob)
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("role", "ids", "why"),
    [("bankd", [], "exactly one"), ("client", [], "one or more"), ("server", [1], "no id"),
     ("client", [1024], "0..1023"), ("modem", [1], "unknown role")],
)  # fmt: skip
def test_bad_identities_are_refused(role: str, ids: list[int], why: str) -> None:
    from remsim_common.pki import PkiError

    with pytest.raises(PkiError, match=why):
        identity_uris(role, ids)


def test_issue_without_a_ca_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["issue", "--dir", str(tmp_path), "server"]) == 1
    assert "remsim-pki init" in capsys.readouterr().err


def test_an_expired_certificate_fails_the_handshake(tmp_path: Path) -> None:
    from remsim_testing.pki import TestCA

    ca = TestCA(tmp_path)
    server = ca.issue("server", "urn:remsim:server").security()
    old = ca.issue("client-23", "urn:remsim:client:23", expired=True).security()
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.wrap_accepted(listener.accept()[0])
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    with pytest.raises((ssl.SSLError, OSError)):
        old.wrap_connected(socket.create_connection(listener.getsockname())).recv(1)
    thread.join(5)
    listener.close()
    assert errors and "certificate" in str(errors[0]).lower()
