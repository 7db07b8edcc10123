"""Options of ``remsim-server``: flags, ``REMSIM_*`` environment variables, a TOML file.

The API's settings (REST, logging, shared store and bus), the core's, and the socket
security of the RSPRO control port (``remsim_common.TransportSettings``: ``--tls-cert``,
``--tls-key``, ``--tls-ca``, ``--require-tls``; plaintext without them), with
``--tls-port`` for a TLS port beside a plaintext control port (mixed fleets).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from remsim_api.settings import ApiSettings
from remsim_common import BANKD_PORT, CONTROL_PORT, TransportSettings, distribution_version
from remsim_control.audit import AUDIT_RETENTION_DAYS
from remsim_control.backends import default_state_dir, new_core_id
from remsim_control.pools import DEFAULT_BLOCK_AFTER
from remsim_server.limits import LOG_INTERVAL, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS
from remsim_server.role import IDENTIFY_TIMEOUT, MAP_REQUEST_TIMEOUT


def package_version() -> str:
    return distribution_version("remsim-server")


def parse_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 literal -> (host, port or None)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    if not host:
        raise ValueError(f"no host in {text!r}")
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port)


def parse_bank_address(text: str) -> tuple[int, str]:
    """``BANK_ID=HOST[:PORT]`` (one ``--bankd-address``) -> (bank id, address)."""
    bank, sep, address = text.partition("=")
    if not sep or not bank.strip().isdigit():
        raise ValueError(f"expected BANK_ID=HOST[:PORT], got {text!r}")
    return int(bank), address


class ServerSettings(ApiSettings, TransportSettings):
    """The API's settings (REST, logs, shared store and bus), the core's and its TLS."""

    model_config = SettingsConfigDict(env_prefix="REMSIM_", extra="forbid")

    store: Literal["sqlite", "memory"] | None = Field(
        default=None,
        description="one host: sqlite (the default: slotmaps and audit log in "
        "state_dir/remsim.sqlite3, kept across restarts) or memory (nothing kept; for "
        "tests); not with redis_url",
    )
    state_dir: Path | None = Field(
        default=None,
        description="the sqlite store's directory (default $XDG_STATE_HOME/remsim, else "
        "~/.local/state/remsim; the systemd unit: /var/lib/remsim)",
    )
    rspro_host: str = Field(default="0.0.0.0", description="RSPRO control bind address")
    rspro_port: int = Field(default=CONTROL_PORT, ge=0, le=65535, description="RSPRO control port")
    tls_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="an RSPRO port for TLS beside the plaintext control port (mixed fleets; "
        "needs tls_cert, tls_key and tls_ca); unset: the control port speaks TLS if they are set",
    )
    identity_name: str = Field(
        default_factory=lambda: socket.gethostname()[:32] or "unknown",
        min_length=1,
        max_length=32,
        description="name in the server's RSPRO identity (default: the host name)",
    )
    sw_version: str = Field(default_factory=package_version, min_length=1, max_length=32)
    bankd_port: int = Field(
        default=BANKD_PORT, ge=1, le=65535, description="bankd port given to clients"
    )
    bankd_addresses: dict[int, str] = Field(
        default_factory=dict,
        description="per bank id, the bankd address given to clients (HOST or HOST:PORT) "
        "instead of the address its control connection comes from",
    )
    keepalive_interval: float = Field(default=30.0, gt=0)
    keepalive_timeout: float = Field(default=10.0, gt=0)
    identify_timeout: float = Field(
        default=IDENTIFY_TIMEOUT,
        gt=0,
        description="seconds a new RSPRO connection has to send its connect request",
    )
    map_request_timeout: float = Field(
        default=MAP_REQUEST_TIMEOUT,
        gt=0,
        description="seconds a bankd has to answer a createMappingReq/removeMappingReq; "
        "unanswered, the map waits with result 'timeout' for the next resync",
    )
    max_connections: int = Field(
        default=MAX_CONNECTIONS,
        ge=1,
        description="RSPRO connections one port holds at most; more are refused at once",
    )
    max_connections_per_address: int = Field(
        default=MAX_CONNECTIONS_PER_ADDRESS,
        ge=1,
        description="RSPRO connections one source address holds at most; more are refused",
    )
    peer_log_interval: float = Field(
        default=LOG_INTERVAL,
        gt=0,
        description="seconds between two log lines of the same peer error (bad bytes, "
        "refused connections); the errors are counted in remsim_peer_errors_total",
    )
    resync_interval: float = Field(
        default=30.0,
        gt=0,
        description="seconds between two re-reads of the store for every connection held "
        "(makes up for lost events; also frees the maps of banks whose core died)",
    )
    audit_days: float = Field(
        default=AUDIT_RETENTION_DAYS,
        gt=0,
        description="days the audit log keeps its entries",
    )
    pool_block_after: int = Field(
        default=DEFAULT_BLOCK_AFTER,
        ge=1,
        description="consecutive failures (refused maps) after which a pool card is blocked",
    )
    core_id: str = Field(
        default_factory=new_core_id,
        min_length=1,
        description="this core's name in the registry and on NATS; unique per process start",
    )

    @field_validator("store", mode="before")
    @classmethod
    def _empty_store_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("bankd_addresses", mode="before")
    @classmethod
    def _from_flags(cls, value: Any) -> Any:
        """``--bankd-address`` (repeatable) gives ``BANK_ID=HOST[:PORT]`` items; the
        environment and the config file give a mapping."""
        if isinstance(value, list | tuple):
            return dict(parse_bank_address(str(item)) for item in value)
        return value

    @field_validator("bankd_addresses")
    @classmethod
    def _valid_addresses(cls, value: dict[int, str]) -> dict[int, str]:
        for address in value.values():
            parse_host_port(address)
        return value

    @model_validator(mode="after")
    def _one_store(self) -> Self:
        """The store of one host: sqlite (in ``state_dir``, or the per-user default) unless
        memory is asked for; with Redis, neither."""
        if self.redis_url or self.nats_url:
            if self.store is not None:
                raise ValueError(
                    f"store {self.store} is for a single host; with redis_url / nats_url "
                    "the state is in Redis: set one or the other"
                )
            return self
        if self.store == "memory" and self.state_dir is not None:
            raise ValueError(
                "store memory keeps nothing, state_dir is for store sqlite: set one or the other"
            )
        if self.store is None:
            self.store = "sqlite"
        if self.store == "sqlite" and self.state_dir is None:
            self.state_dir = default_state_dir()
        return self

    @model_validator(mode="after")
    def _tls_port_with_tls(self) -> Self:
        if self.tls_port is not None and self.tls_cert is None:
            raise ValueError("tls_port needs tls_cert, tls_key and tls_ca")
        if self.tls_port and self.tls_port == self.rspro_port:
            raise ValueError("tls_port must differ from rspro_port")
        return self
