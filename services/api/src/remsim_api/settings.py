"""Options of ``remsim-api`` (``REMSIM_*`` environment variables, overridden by flags).

``remsim-server``'s settings extend these, so both read the shared store and bus from the
same variables (``REMSIM_REDIS_URL``, ``REMSIM_NATS_URL``, ``REMSIM_LEASE_TTL``: the
attributes of ``remsim_control.backends.BackendSettings``).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from remsim_control.logs import LogFormat


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REMSIM_", extra="ignore")

    rest_host: str = Field(default="0.0.0.0", description="REST bind address")
    rest_port: int = Field(default=9997, ge=0, le=65535, description="REST port")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR")
    log_format: LogFormat = "text"
    redis_url: str | None = Field(
        default=None, description="shared store, redis://host:6379/0; unset: in memory"
    )
    nats_url: str | None = Field(
        default=None, description="shared bus, nats://host:4222 (needs redis_url); unset: local"
    )
    lease_ttl: float = Field(
        default=15.0, gt=0, description="seconds until a dead core's connections are forgotten"
    )
