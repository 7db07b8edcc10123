"""Options of ``remsim-api``: flags, ``REMSIM_*`` environment variables, a TOML file.

``remsim-server``'s settings extend these, so both read the shared store and bus from the
same variables (``REMSIM_REDIS_URL``, ``REMSIM_NATS_URL``, ``REMSIM_LEASE_TTL``: the
attributes of ``remsim_control.backends.BackendSettings``). Logging (``REMSIM_LOG_LEVEL``,
``REMSIM_DEBUG``, ``REMSIM_LOG_FORMAT``) comes from ``remsim_common.CommonSettings``.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from remsim_common import REST_PORT, CommonSettings


class ApiSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="REMSIM_", extra="forbid")

    rest_host: str = Field(default="0.0.0.0", description="REST bind address")
    rest_port: int = Field(default=REST_PORT, ge=0, le=65535, description="REST port")
    redis_url: str | None = Field(
        default=None, description="shared store, redis://host:6379/0; unset: in memory"
    )
    nats_url: str | None = Field(
        default=None, description="shared bus, nats://host:4222 (needs redis_url); unset: local"
    )
    lease_ttl: float = Field(
        default=15.0, gt=0, description="seconds until a dead core's connections are forgotten"
    )
