"""Options of ``remsim-api`` (``REMSIM_*`` environment variables, overridden by flags)."""

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
