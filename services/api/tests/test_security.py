"""REST security (docs/rsres-compat.md, "Security"): bearer tokens with roles, the browser
checks (Content-Type, Origin, Host) with or without tokens, and HTTPS."""

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from remsim_api import apitool
from remsim_api.app import create_app
from remsim_api.security import ApiSecurity, TokenFile, tls_options
from remsim_api.settings import ApiSettings
from remsim_common.pki import token_line
from remsim_control import (
    BankdAddress,
    BankRecord,
    BankSlot,
    ClientRecord,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    MemoryBus,
    MemoryStore,
)

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared/reference/upstream-1.0.0"
PREFIX = "/api/backend/v1"
ORIGIN = "http://127.0.0.1:9997"
"""Where the original's API is; the Host of every request here."""
SECRETS = {
    "vera": ("viewer", "vera-secret-3f9a1c77e2d84b6a"),
    "otto": ("operator", "otto-secret-5b21e0c4a9f7d3e8"),
    "ada": ("admin", "ada-secret-c8d2f6a1b4e9073f"),
}
MAP = {"bank": {"bankId": 1, "slotNr": 0}, "client": {"clientId": 23, "slotNr": 0}}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

IDENTITY = ComponentIdentity(
    type=ComponentType.BANKD, name="fixme-name", software="remsim-bankd", sw_version="1.0.0"
)
B1 = BankRecord(
    bank_id=1,
    number_of_slots=2,
    identity=IDENTITY,
    bankd=BankdAddress(host="127.0.0.1", port=9999),
    remote="127.0.0.1:41000",
    core_id="core",
)
C23 = ClientRecord(
    client=ClientSlot(client_id=23, slot_nr=0),
    identity=IDENTITY.model_copy(update={"type": ComponentType.CLIENT}),
    remote="127.0.0.1:41001",
    core_id="core",
)


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name][1]}"}


def write_tokens(path: Path, *names: str) -> Path:
    path.write_text("".join(token_line(n, SECRETS[n][0], SECRETS[n][1]) + "\n" for n in names))
    return path


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    return write_tokens(tmp_path / "api-tokens", *SECRETS)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def client_for(app: Any, base_url: str = ORIGIN) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
async def api(store: MemoryStore, tokens: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API with tokens."""
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(tokens)))
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def open_api(store: MemoryStore) -> AsyncIterator[httpx.AsyncClient]:
    """The API without tokens, as the original (the browser checks still on)."""
    async with client_for(create_app(store, MemoryBus())) as client:
        yield client


async def mapped(store: MemoryStore) -> None:
    await store.create_slotmap(BankSlot(bank_id=1, slot_nr=0), ClientSlot(client_id=23, slot_nr=0))


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status and problem["detail"]
    return problem


# --- tokens and roles ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{PREFIX}/slotmaps"),
        ("POST", f"{PREFIX}/slotmaps"),
        ("DELETE", f"{PREFIX}/slotmaps/65536"),
        ("POST", f"{PREFIX}/global-reset"),
        ("GET", "/api/v1/audit"),
        ("GET", "/metrics"),
    ],
)
async def test_without_a_token_it_is_401_with_a_bearer_challenge(
    api: httpx.AsyncClient, store: MemoryStore, method: str, path: str
) -> None:
    await mapped(store)
    response = await api.request(method, path, json=MAP if method == "POST" else None)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer realm="remsim"'
    assert len(await store.list_slotmaps()) == 1


@pytest.mark.parametrize("authorization", ["Bearer not-a-token-7c1e", "Basic dmVyYTpzZWNyZXQ="])
async def test_a_wrong_token_is_401_and_never_repeated(
    api: httpx.AsyncClient, authorization: str
) -> None:
    response = await api.get(f"{PREFIX}/slotmaps", headers={"Authorization": authorization})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith('Bearer realm="remsim"')
    secret = authorization.split()[1]
    assert secret not in response.text and secret not in str(response.headers)


async def test_a_viewer_reads_an_operator_maps_and_unmaps_an_admin_resets(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    assert (await api.get(f"{PREFIX}/slotmaps", headers=bearer("vera"))).status_code == 200
    refused = await api.post(f"{PREFIX}/slotmaps", json=MAP, headers=bearer("vera"))
    problem = assert_problem(refused, 403)
    assert problem["detail"] == "token 'vera' has role viewer; this needs operator"
    assert SECRETS["vera"][1] not in refused.text
    assert await store.list_slotmaps() == []

    assert (
        await api.post(f"{PREFIX}/slotmaps", json=MAP, headers=bearer("otto"))
    ).status_code == 201
    assert (await api.delete(f"{PREFIX}/slotmaps/65536", headers=bearer("otto"))).status_code == 200
    await mapped(store)
    assert_problem(await api.post(f"{PREFIX}/global-reset", headers=bearer("otto")), 403)
    still = await api.get(f"{PREFIX}/slotmaps", headers=bearer("otto"))
    assert len(still.json()["slotmaps"]) == 1
    reset = await api.post(f"{PREFIX}/global-reset", headers=bearer("ada"))
    assert (reset.status_code, reset.content) == (200, b"")
    assert (await api.get(f"{PREFIX}/slotmaps", headers=bearer("ada"))).json() == {"slotmaps": []}


async def test_probes_and_docs_are_open_metrics_need_a_viewer(api: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json"):
        assert (await api.get(path)).status_code == 200, path
    assert_problem(await api.get("/metrics"), 401)
    assert (await api.get("/metrics", headers=bearer("vera"))).status_code == 200
    document = (await api.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    assert "401" in document["paths"][f"{PREFIX}/slotmaps"]["post"]["responses"]


async def test_the_tokens_file_is_read_again_when_it_changes(
    store: MemoryStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_tokens(tmp_path / "api-tokens", "vera")
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(path)))
    async with client_for(app) as api:
        assert_problem(await api.post(f"{PREFIX}/slotmaps", json=MAP, headers=bearer("otto")), 401)
        write_tokens(path, "vera", "otto")
        assert (
            await api.post(f"{PREFIX}/slotmaps", json=MAP, headers=bearer("otto"))
        ).status_code == 201
        path.write_text("otto operator not-a-hash\n")  # a bad edit keeps the tokens before it
        assert (await api.get(f"{PREFIX}/slotmaps", headers=bearer("otto"))).status_code == 200
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "line 1" in error.getMessage() and "keeping the 2 tokens" in error.getMessage()


# --- browser checks, with or without tokens -------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
)
async def test_a_form_post_to_global_reset_is_415_and_loses_no_map(
    open_api: httpx.AsyncClient, store: MemoryStore, content_type: str
) -> None:
    await mapped(store)
    response = await open_api.post(
        f"{PREFIX}/global-reset", content="x=1", headers={"Content-Type": content_type}
    )
    assert_problem(response, 415)
    assert_problem(await open_api.delete(f"{PREFIX}/slotmaps/65536", headers=FORM), 415)
    assert len((await open_api.get(f"{PREFIX}/slotmaps")).json()["slotmaps"]) == 1


async def test_a_form_post_is_415_even_with_an_admin_token(
    api: httpx.AsyncClient, store: MemoryStore
) -> None:
    await mapped(store)
    response = await api.post(f"{PREFIX}/global-reset", headers=FORM | bearer("ada"))
    assert_problem(response, 415)
    assert len(await store.list_slotmaps()) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9998"},  # another port is another origin
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},  # a form, not a link
    ],
)
async def test_a_cross_origin_post_to_global_reset_is_403_and_loses_no_map(
    open_api: httpx.AsyncClient, store: MemoryStore, headers: dict[str, str]
) -> None:
    await mapped(store)
    assert_problem(await open_api.post(f"{PREFIX}/global-reset", headers=headers), 403)
    assert len(await store.list_slotmaps()) == 1


async def test_the_apis_own_origin_and_links_from_elsewhere_pass(
    open_api: httpx.AsyncClient,
) -> None:
    own = await open_api.post(f"{PREFIX}/slotmaps", json=MAP, headers={"Origin": ORIGIN})
    assert own.status_code == 201
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert (await open_api.get("/docs", headers=link)).status_code == 200
    assert (await open_api.get(f"{PREFIX}/slotmaps", headers=link)).status_code == 200
    same = {"Sec-Fetch-Site": "same-origin", "Origin": ORIGIN}
    assert (await open_api.post(f"{PREFIX}/global-reset", headers=same)).status_code == 200


async def test_a_configured_origin_may_call_with_cors(store: MemoryStore) -> None:
    dashboard = "https://dash.example"
    settings = ApiSettings(rest_host="127.0.0.1", api_origins=f"{dashboard}:443, http://x.test")
    app = create_app(store, MemoryBus(), security=ApiSecurity.from_settings(settings))
    async with client_for(app) as api:
        preflight = await api.options(
            f"{PREFIX}/slotmaps",
            headers={
                "Origin": dashboard,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == dashboard
        cross_site = {"Origin": dashboard, "Sec-Fetch-Site": "cross-site"}
        created = await api.post(f"{PREFIX}/slotmaps", json=MAP, headers=cross_site)
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == dashboard
        assert_problem(
            await api.post(f"{PREFIX}/global-reset", headers={"Origin": "https://a.b"}), 403
        )


async def hosts_app(store: MemoryStore, rest_host: str, *names: str) -> httpx.AsyncClient:
    """The API as it is configured by ``--rest-host`` and ``--api-hosts``."""
    settings = ApiSettings(rest_host=rest_host, api_hosts=list(names))
    return client_for(create_app(store, MemoryBus(), security=ApiSecurity.from_settings(settings)))


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("remsim.example", 200),
        ("REMSIM.example.:9997", 200),
        ("bank.lab.example", 200),
        ("lab.example", 200),
        ("127.0.0.1:9997", 200),
        ("[::1]:9997", 200),
        ("192.0.2.7", 200),
        ("localhost:9997", 200),
        (socket.gethostname(), 200),
        ("evil.example", 421),
        ("remsim.example.evil.example", 421),
        ("xlab.example", 421),
    ],
)
@pytest.mark.parametrize("rest_host", ["0.0.0.0", "127.0.0.1"])
async def test_only_the_configured_host_names_are_answered(
    store: MemoryStore, rest_host: str, host: str, status: int
) -> None:
    async with await hosts_app(store, rest_host, "remsim.example", ".lab.example") as api:
        response = await api.get(f"{PREFIX}/banks", headers={"Host": host})
        if status == 200:
            assert response.status_code == 200
        else:
            assert "--api-hosts" in assert_problem(response, status)["detail"]
        assert (await api.get("/healthz", headers={"Host": host})).status_code == 200


async def test_with_a_star_any_host_is_answered(store: MemoryStore) -> None:
    async with await hosts_app(store, "0.0.0.0", "*") as api:
        response = await api.get(f"{PREFIX}/banks", headers={"Host": "evil.example"})
        assert response.status_code == 200


async def test_dns_rebinding_to_loopback_is_refused(store: MemoryStore) -> None:
    """evil.example, resolved to 127.0.0.1, makes the attacker's page "same-origin" with
    an API on loopback: its name gives it away."""
    await mapped(store)
    rebound = {"Host": "evil.example:9997", "Origin": "http://evil.example:9997"}
    async with await hosts_app(store, "127.0.0.1") as api:
        assert_problem(await api.post(f"{PREFIX}/global-reset", headers=rebound), 421)
        assert_problem(await api.get(f"{PREFIX}/slotmaps", headers=rebound), 421)
    assert len(await store.list_slotmaps()) == 1


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference recordings not available")
async def test_the_recorded_curl_requests_pass_the_checks_as_before(store: MemoryStore) -> None:
    """The original's curl transcripts (s8), with curl's own headers, through every check:
    only what docs/rsres-compat.md lists answers differently."""
    differences = {
        "POST slotmap with curl -d (no explicit Content-Type -> form-urlencoded)": 415,
        "GET banks/5 (unknown)": 404,
        "PUT slotmaps (no route)": 405,
    }
    await store.register_bank(B1)
    await store.register_client(C23)
    replayed = 0
    async with await hosts_app(store, "0.0.0.0") as api:
        for line in (REFERENCE / "rest.jsonl").read_text().splitlines():
            record = json.loads(line)
            if "request_lines" not in record:
                continue
            method, path, _ = record["request_lines"][0].split()
            headers = dict(h.split(": ", 1) for h in record["request_lines"][1:] if h)
            headers.pop("Content-Length", None)
            args = record["curl_args"]
            body = args[args.index("-d") + 1] if "-d" in args else None
            response = await api.request(method, path, content=body, headers=headers)
            expected = differences.get(record["note"], record["status"])
            assert response.status_code == expected, record["note"]
            replayed += 1
    assert replayed == 16


async def test_the_original_apitools_requests_pass_the_checks(
    open_api: httpx.AsyncClient, store: MemoryStore
) -> None:
    """python-requests, as the original's apitool uses it: no Content-Type without a body,
    no Origin, ``Content-Length: 0`` on a POST without a body."""
    requests_headers = {"User-Agent": "python-requests/2.28.1", "Accept": "*/*"}
    content = json.dumps(MAP)
    json_headers = requests_headers | {"Content-Type": "application/json"}
    created = await open_api.post(f"{PREFIX}/slotmaps", content=content, headers=json_headers)
    assert created.status_code == 201
    deleted = await open_api.delete(f"{PREFIX}/slotmaps/65536", headers=requests_headers)
    assert deleted.status_code == 200
    reset = await open_api.post(
        f"{PREFIX}/global-reset", headers=requests_headers | {"Content-Length": "0"}
    )
    assert reset.status_code == 200


# --- logs and HTTPS ---------------------------------------------------------------------------


async def test_a_token_is_in_no_log_line(
    store: MemoryStore, tokens: Path, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(tokens)))
    async with (
        serve(app, access_log=True) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        bodies = [
            await http.get(f"{PREFIX}/slotmaps", headers=bearer("vera")),
            await http.post(f"{PREFIX}/slotmaps", json=MAP, headers=bearer("vera")),
            await http.post(f"{PREFIX}/slotmaps", json=MAP, headers=bearer("otto")),
            await http.post(f"{PREFIX}/global-reset", headers=FORM | bearer("ada")),
            await http.get(f"{PREFIX}/banks", headers={"Authorization": "Bearer wrong-7c1e"}),
            await http.get("/api/v1/audit", headers=bearer("ada")),
        ]
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any('"POST /api/backend/v1/slotmaps HTTP/1.1" 403' in line for line in access)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    answered = "\n".join(f"{r.headers} {r.text}" for r in bodies)
    for _, secret in [*SECRETS.values(), ("", "wrong-7c1e")]:
        assert secret not in logged
        assert secret not in answered


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


async def test_https_with_the_certificate_of_tls_cert_and_tls_key(
    store: MemoryStore, tokens: Path, serve: Any, tls_ca: trustme.CA, tmp_path: Path
) -> None:
    server_cert = tls_ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    server_cert.private_key_pem.write_to_path(str(key))
    settings = ApiSettings(rest_host="127.0.0.1", tls_cert=cert, tls_key=key, api_tokens=tokens)
    app = create_app(store, MemoryBus(), security=ApiSecurity.from_settings(settings))
    client_context = ssl.create_default_context()
    tls_ca.configure_trust(client_context)
    async with serve(app, **tls_options(settings)) as port:
        base = f"https://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, verify=client_context) as https:
            response = await https.get(f"{PREFIX}/banks", headers=bearer("vera"))
            assert (response.status_code, response.content) == (200, b'{"banks":[]}')
            ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
            assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        async with httpx.AsyncClient(base_url=base) as untrusting:  # the system's CAs
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get("/healthz")


async def test_settings_take_https_and_the_security_options(
    tokens: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMSIM_API_ORIGINS", "https://dash.example, https://ops.example:8443")
    monkeypatch.setenv("REMSIM_API_HOSTS", "remsim.example .lab.example")
    settings = ApiSettings(api_tokens=tokens)
    assert settings.api_origins == ["https://dash.example", "https://ops.example:8443"]
    assert settings.api_hosts == ["remsim.example", ".lab.example"]
    assert tls_options(settings) == {}
    with pytest.raises(ValueError, match="HTTPS needs both"):
        ApiSettings(tls_cert=Path("api.pem"))
    with pytest.raises(ValueError, match="not an origin"):
        ApiSettings(api_origins=["dash.example"])


# --- remsim-apitool --------------------------------------------------------------------------


async def run_apitool(*argv: str) -> int:
    """The tool in a thread (it is synchronous); its exit status."""
    try:
        await asyncio.to_thread(apitool.main, list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


async def test_apitool_sends_its_token_over_https(
    store: MemoryStore,
    tokens: Path,
    serve: Any,
    tls_ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server_cert = tls_ca.issue_cert("127.0.0.1")
    pem = tmp_path / "api.pem"
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    app = create_app(store, MemoryBus(), security=ApiSecurity(tokens=TokenFile(tokens)))
    async with serve(app, ssl_certfile=str(pem)) as port:
        where = ["-H", "127.0.0.1", "-p", str(port), "--ca", str(ca_file)]
        assert await run_apitool(*where, "-m", "1", "0", "23", "0") == 1
        assert (
            await run_apitool(*where, "--token", SECRETS["otto"][1], "-m", "1", "0", "23", "0") == 0
        )
        monkeypatch.setenv("REMSIM_API_TOKEN", SECRETS["vera"][1])
        assert await run_apitool(*where, "-v", "-s") == 0
        assert await run_apitool(*where, "-r") == 1  # a viewer may not reset
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1:] == [
        f"GET https://127.0.0.1:{port}{PREFIX}/slotmaps",
        "/slotmaps: {'slotmaps': [{'bank': {'bankId': 1, 'slotNr': 0}, 'client': "
        "{'clientId': 23, 'slotNr': 0}, 'state': 'NEW', 'id': 65536}]}",
    ]
    assert captured.err.splitlines() == [
        "remsim-apitool: POST /slotmaps failed: 401 Unauthorized: a bearer token is required",
        "remsim-apitool: POST /global-reset failed: 403 Forbidden: "
        "token 'vera' has role viewer; this needs admin",
    ]
    assert not any(secret in captured.out + captured.err for _, secret in SECRETS.values())
