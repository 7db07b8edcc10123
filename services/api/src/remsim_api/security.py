"""Who may use the REST API, and from where (docs/rsres-compat.md, "Security").

``Guard`` checks every request before the API sees it, in this order, each refusal an RFC
9457 problem:

1. **Host**: a name not in ``--api-hosts`` → 421. IP addresses, ``localhost`` and this
   host's name always pass: DNS rebinding, what the check is against (a name the attacker
   controls, pointed at the API, makes the attacker's page "same-origin"), needs a name.
   Made on loopback too: a browser on the API's host is what DNS rebinding reaches there.
2. **Origin**: a browser's request from another origin than the API's own and not in
   ``--api-origins`` → 403; so is ``Sec-Fetch-Site: cross-site`` (except following a link).
3. **Content-Type**: a mutating request (POST, PUT, PATCH, DELETE) whose Content-Type is
   present and not JSON → 415. A form or ``text/plain`` is what a page of another site can
   send without asking; JSON makes the browser ask first (CORS), and remsim says no. The
   original's apitool and curl send no Content-Type on DELETE and global-reset: they pass.
4. **Bearer token** (with ``--api-tokens``): none or an unknown one → 401 with
   ``WWW-Authenticate: Bearer``; a role too low → 403. ``viewer`` may GET, ``operator``
   also create and delete slotmaps, ``admin`` everything (global-reset).

The token comes in ``Authorization: Bearer``, or, from the dashboard's page
(``remsim_api.ui``), in the ``remsim_token`` cookie (``SameSite=Strict``: a page of another
site cannot send it; the Origin and Content-Type checks above apply to it all the same).

``/healthz`` and ``/readyz`` are open to all; so are the dashboard's page (``/ui``, which
asks for a token itself and shows nothing without one) and its static files. The
documentation (``/docs``, ``/redoc``, ``/openapi.json``) needs no token (a browser cannot
send one to load it; it shows nothing that is not in docs/). Every mutating request,
refused or not, is written to the audit log (``remsim_api.audit``) before its answer is
sent. A token is never logged nor echoed: only
its SHA-256 is kept, compared in constant time.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote, urlsplit

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from remsim_api import audit, paths
from remsim_api.problems import problem
from remsim_control import AuditEntry, AuditKind, BackendUnavailable, Store

__all__ = [
    "ANONYMOUS",
    "TOKEN",
    "ApiSecurity",
    "Guard",
    "Role",
    "Token",
    "TokenFile",
    "is_json",
    "load_tokens",
    "normalize_origin",
    "required_role",
    "tls_options",
]

log = logging.getLogger("remsim.api.security")

ANONYMOUS = "anonymous"
"""The audit log's actor of a request without a valid token."""
REALM = "remsim"
TOKEN = "remsim.token"
"""The request scope's key of the valid ``Token`` presented (None: none, or tokens off)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing: never audited, a viewer's."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
HOST_CACHE_SIZE = 1024
"""Host header values whose parsing is remembered (the Host check runs on every request)."""
_ECHO_MAX = 100
"""Characters of a refused Host or Origin repeated in the answer and the log line."""


class Role(enum.IntEnum):
    """A token's role; each may do what the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Token:
    name: str
    role: Role
    digest: bytes = field(repr=False)
    """SHA-256 of the token."""


def parse_tokens(text: str) -> tuple[Token, ...]:
    """The lines ``NAME ROLE SHA256-HEX`` of a tokens file (``remsim-pki token``); blank
    lines and ``#`` comments are skipped. Raises ValueError naming the bad line."""
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 3:
            raise ValueError(f"line {number}: expected NAME ROLE SHA256, got {len(words)} words")
        name, role, digest = words
        if role not in {str(r) for r in Role}:
            raise ValueError(f"line {number}: role {role!r} is not viewer, operator or admin")
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            raw = b""
        if len(raw) != hashlib.sha256().digest_size:
            raise ValueError(f"line {number}: the third word is not a SHA-256 in hex")
        tokens.append(Token(name, Role[role.upper()], raw))
    return tuple(tokens)


def load_tokens(path: Path) -> tuple[Token, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return parse_tokens(text)
    except ValueError as exc:
        raise ValueError(f"{path}, {exc}") from None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class TokenFile:
    """The tokens file, read again when it changes; an edit that breaks it (or removes it)
    keeps the tokens read before, with one log line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = _stamp(path)
        self._tokens = load_tokens(path)

    def tokens(self) -> tuple[Token, ...]:
        stamp = _stamp(self.path)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._tokens = load_tokens(self.path)
            except ValueError as exc:
                log.error("%s; keeping the %d tokens read before", exc, len(self._tokens))
            else:
                log.info("%s read again: %d tokens", self.path, len(self._tokens))
        return self._tokens

    def authenticate(self, secret: str) -> Token | None:
        """The token whose hash is ``secret``'s (every entry compared, in constant time)."""
        digest = hashlib.sha256(secret.encode()).digest()
        found = None
        for token in self.tokens():
            if hmac.compare_digest(digest, token.digest) and found is None:
                found = token
        return found


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` as browsers send it: lower case, no default port."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return origin
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return f"{scheme}://{netloc}"


@functools.lru_cache(maxsize=HOST_CACHE_SIZE)  # a back-end sends one Host request after request
def _host_name(host_header: str) -> str:
    """The name in a Host header, without port or brackets: ``[::1]:9997`` → ``::1``."""
    try:
        return (urlsplit(f"//{host_header}").hostname or "").rstrip(".")
    except ValueError:
        return ""


@functools.lru_cache(maxsize=HOST_CACHE_SIZE)
def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_json(content_type: str) -> bool:
    """``application/json`` or ``application/*+json``, parameters allowed."""
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def required_role(method: str, path: str) -> Role | None:
    """The least role for a request; None: open to everybody."""
    if path in paths.PROBES or path in paths.DOCS or path.startswith(paths.DOCS_STATIC + "/"):
        return None
    ui_page = path in paths.UI_PAGES or path.startswith(paths.UI_STATIC + "/")
    if method in SAFE_METHODS and ui_page:  # the dashboard's pages ask for a token themselves
        return None
    if method in SAFE_METHODS:
        return Role.VIEWER
    if (
        method == "POST" and path in (paths.SLOTMAPS, paths.OWN_SLOTMAPS, paths.OWN_SLOTMAPS_BATCH)
    ) or (method == "DELETE" and path.startswith(paths.SLOTMAPS + "/")):
        return Role.OPERATOR
    if path.startswith(paths.POOL_PATHS):  # SIM pools, rules, card states, leases
        return Role.OPERATOR
    return Role.ADMIN


class _SecurityOptions(Protocol):
    @property
    def api_tokens(self) -> Path | None: ...
    @property
    def api_origins(self) -> list[str]: ...
    @property
    def api_hosts(self) -> list[str]: ...


class _TlsOptions(Protocol):
    @property
    def tls_cert(self) -> Path | None: ...
    @property
    def tls_key(self) -> Path | None: ...


def tls_options(settings: _TlsOptions) -> dict[str, Any]:
    """``uvicorn.Config`` options for HTTPS with the settings' certificate; ``{}``: HTTP."""
    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    return {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}


@dataclass(frozen=True)
class ApiSecurity:
    """What ``Guard`` enforces. The default, ``OPEN``: no tokens, any Host, only the API's
    own origin (the CSRF checks are always on)."""

    tokens: TokenFile | None = None
    """None: no tokens, everybody may do everything (as the original)."""
    origins: frozenset[str] = frozenset()
    """Browser origins allowed besides the API's own (normalized)."""
    hosts: frozenset[str] | None = None
    """Host names answered to besides IP addresses and localhost; ``*``: any. None: no
    check (tests; ``from_settings`` always checks)."""

    OPEN: ClassVar[ApiSecurity]

    @classmethod
    def from_settings(cls, settings: _SecurityOptions) -> ApiSecurity:
        """Raises ValueError if the tokens file cannot be read."""
        tokens = TokenFile(settings.api_tokens) if settings.api_tokens is not None else None
        hosts = frozenset(settings.api_hosts) | {socket.gethostname().lower()}
        origins = frozenset(normalize_origin(origin) for origin in settings.api_origins)
        return cls(tokens, origins, hosts)

    def host_allowed(self, host_header: str) -> bool:
        if self.hosts is None:
            return True
        name = _host_name(host_header)
        if not name:
            return False
        if "*" in self.hosts or _is_ip(name) or name == "localhost":
            return True
        return name in self.hosts or any(
            allowed.startswith(".") and (name.endswith(allowed) or name == allowed[1:])
            for allowed in self.hosts
        )

    def origin_allowed(self, origin: str, scope: Scope, headers: Headers) -> bool:
        """``origin`` is the API's own (scheme and Host of the request) or configured."""
        origin = normalize_origin(origin)
        own = normalize_origin(f"{scope.get('scheme', 'http')}://{headers.get('host', '')}")
        return origin == own or origin in self.origins


ApiSecurity.OPEN = ApiSecurity()


@dataclass(frozen=True)
class _Refusal:
    status: int
    detail: str
    headers: dict[str, str] | None = None


def _challenge(error: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return {"WWW-Authenticate": value}


def _address(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class Guard:
    """ASGI middleware: the checks above, then the app; every mutating request audited."""

    def __init__(self, app: ASGIApp, security: ApiSecurity, store: Store) -> None:
        self.app = app
        self.security = security
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in paths.PROBES:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token, presented = self._authenticate(headers)
        scope[TOKEN] = token
        actor = token.name if token is not None else ANONYMOUS
        refusal = self._refusal(scope, headers, token, presented)
        if scope["method"] in SAFE_METHODS:
            await self._answer(scope, receive, send, refusal)
            return
        facts = scope[audit.FACTS] = {}
        if refusal is not None:
            facts["detail"] = refusal.detail
        written = False

        async def send_audited(message: Message) -> None:
            nonlocal written
            if message["type"] == "http.response.start" and not written:
                written = True
                await self._audit(scope, actor, message["status"], facts)
            await send(message)

        try:
            await self._answer(scope, receive, send_audited, refusal)
        except Exception:
            if not written:
                await self._audit(scope, actor, 500, facts)
            raise

    def _authenticate(self, headers: Headers) -> tuple[Token | None, bool]:
        """The valid token presented (if tokens are on), and whether one was presented."""
        scheme, _, secret = headers.get("authorization", "").partition(" ")
        secret = secret.strip()
        presented = scheme.lower() == "bearer" and bool(secret)
        if not presented and "authorization" not in headers:
            cookie = cookie_parser(headers.get("cookie", "")).get(paths.TOKEN_COOKIE, "")
            secret = unquote(cookie).strip()
            presented = bool(secret)
        if self.security.tokens is None or not presented:
            return None, presented
        return self.security.tokens.authenticate(secret), presented

    def _refusal(
        self, scope: Scope, headers: Headers, token: Token | None, presented: bool
    ) -> _Refusal | None:
        method, path = scope["method"], scope["path"]
        host = headers.get("host", "")
        if not self.security.host_allowed(host):
            return _Refusal(
                421, f"this API does not answer to Host {host[:_ECHO_MAX]!r} (--api-hosts)"
            )
        origin = headers.get("origin")
        if origin is not None and not self.security.origin_allowed(origin, scope, headers):
            return _Refusal(
                403, f"requests from origin {origin[:_ECHO_MAX]!r} are not allowed (--api-origins)"
            )
        navigation = method in SAFE_METHODS and headers.get("sec-fetch-mode") == "navigate"
        if headers.get("sec-fetch-site") == "cross-site" and origin is None and not navigation:
            return _Refusal(403, "cross-site requests are not allowed")
        content_type = headers.get("content-type")
        if method not in SAFE_METHODS and content_type is not None and not is_json(content_type):
            return _Refusal(
                415, "a request that changes something must be sent as application/json or "
                "without a body"
            )  # fmt: skip
        required = required_role(method, path)
        if self.security.tokens is None or required is None:
            return None
        if token is None:
            if presented:
                return _Refusal(401, "the bearer token is not valid", _challenge("invalid_token"))
            return _Refusal(401, "a bearer token is required", _challenge())
        if token.role < required:
            return _Refusal(
                403,
                f"token {token.name!r} has role {token.role}; this needs {required}",
                _challenge("insufficient_scope"),
            )
        return None

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, refusal: _Refusal | None
    ) -> None:
        if refusal is None:
            await self.app(scope, receive, send)
            return
        log.info(
            "%s %s refused: %d",
            scope["method"],
            scope["path"],
            refusal.status,
            extra={"peer": _address(scope), "cause": refusal.detail},
        )
        response = problem(
            refusal.status, refusal.detail, instance=scope["path"], headers=refusal.headers
        )
        await response(scope, receive, send)

    async def _audit(self, scope: Scope, actor: str, status: int, facts: dict[str, Any]) -> None:
        entry = AuditEntry(
            kind=AuditKind.REST,
            actor=actor,
            action=f"{scope['method']} {scope['path']}",
            result=str(status),
            address=_address(scope),
            **facts,
        )
        try:
            await self.store.add_audit(entry)
        except (BackendUnavailable, OSError) as exc:
            log.warning(
                "audit entry not written: %s %s", entry.actor, entry.action, extra={"cause": exc}
            )
