"""Options of ``remsim-api``: flags, ``REMSIM_*`` environment variables, a TOML file.

``remsim-server``'s settings extend these, so both read the shared store and bus from the
same variables (``REMSIM_REDIS_URL``, ``REMSIM_NATS_URL``, ``REMSIM_LEASE_TTL``: the
attributes of ``remsim_control.backends.BackendSettings``) and protect the REST port the
same way (``REMSIM_API_TOKENS``, ``REMSIM_API_ORIGINS``, ``REMSIM_API_HOSTS``,
``REMSIM_TLS_CERT``/``REMSIM_TLS_KEY``: ``remsim_api.security``). Logging
(``REMSIM_LOG_LEVEL``, ``REMSIM_DEBUG``, ``REMSIM_LOG_FORMAT``) comes from
``remsim_common.CommonSettings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from remsim_api.limits import KEEPALIVE_TIMEOUT, REQUEST_TIMEOUT
from remsim_api.security import load_tokens, normalize_origin
from remsim_common import REST_PORT, CommonSettings


def _words(value: Any) -> Any:
    """A list from a flag given several times, a TOML list, or ``a,b c`` (environment)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        return [word for item in value for word in str(item).replace(",", " ").split()]
    return value


def _origin(value: str) -> str:
    """``https://dash.example:8443``: a scheme, a host and maybe a port, nothing else."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{value!r} is not an origin like https://dash.example:8443")
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r} is not an origin like https://dash.example:8443")
    return normalize_origin(value)


def _host_name(value: str) -> str:
    """``remsim.example``, ``.example`` (it and every name below it) or ``*`` (any)."""
    name = value.lower().rstrip(".")
    if not name or "/" in name or ":" in name or "@" in name:
        raise ValueError(f"{value!r} is not a host name (no scheme, no port)")
    return name


Words = Annotated[list[str], NoDecode, BeforeValidator(_words)]


class ApiSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="REMSIM_", extra="forbid")

    rest_host: str = Field(default="0.0.0.0", description="REST bind address")
    rest_port: int = Field(default=REST_PORT, ge=0, le=65535, description="REST port")
    rest_request_timeout: float = Field(
        default=REQUEST_TIMEOUT,
        gt=0,
        description="seconds for a whole request to arrive (slow clients: 408, closed)",
    )
    rest_keepalive_timeout: int = Field(
        default=KEEPALIVE_TIMEOUT, gt=0, description="seconds an idle keep-alive connection stays"
    )
    state_dir: Path | None = Field(
        default=None,
        description="one host: slotmaps and audit log in DIR/remsim.sqlite3, kept across "
        "restarts (not with redis_url); unset: in memory",
    )
    redis_url: str | None = Field(
        default=None, description="shared store, redis://host:6379/0; unset: in memory"
    )
    nats_url: str | None = Field(
        default=None, description="shared bus, nats://host:4222 (needs redis_url); unset: local"
    )
    lease_ttl: float = Field(
        default=15.0, gt=0, description="seconds until a dead core's connections are forgotten"
    )
    api_tokens: Path | None = Field(
        default=None,
        description="file of 'NAME ROLE SHA256' lines (remsim-pki token); unset: no tokens",
    )
    api_origins: Annotated[Words, AfterValidator(lambda v: [_origin(o) for o in v])] = Field(
        default_factory=list,
        description="browser origins allowed besides the API's own, e.g. https://dash.example",
    )
    api_hosts: Annotated[Words, AfterValidator(lambda v: [_host_name(h) for h in v])] = Field(
        default_factory=list,
        description="Host names the API answers to besides IP addresses, localhost and "
        "this host's name; '*': any",
    )
    tls_cert: Path | None = Field(default=None, description="certificate for HTTPS (PEM)")
    tls_key: Path | None = Field(default=None, description="its private key (PEM)")

    @field_validator("state_dir", "redis_url", "nats_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``REMSIM_STATE_DIR=`` (e.g. a systemd drop-in) unsets it, as for the URLs."""
        return None if value == "" else value

    @field_validator("api_tokens")
    @classmethod
    def _readable_tokens(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_tokens(value)  # a bad file is a bad option, reported at start
        return value

    @model_validator(mode="after")
    def _certificate_and_key(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("HTTPS needs both tls_cert and tls_key")
        return self
