"""Settings of every remsim program: one model per program, one loading order, one error format.

Where a value comes from, the first that has it wins:

1. the command line (flags named as the original's where it has them),
2. the program's environment variables, ``<PREFIX><FIELD>`` (``REMSIM_BANKD_BIND_PORT``;
   the prefix is the model's ``env_prefix``),
3. for the options every program shares (logging, transport security), ``REMSIM_<FIELD>``
   (``REMSIM_LOG_FORMAT=json`` for every program of a host or container),
4. a TOML config file (``--config FILE`` or ``<PREFIX>CONFIG``), flat ``field = value`` lines,
5. the default.

A program's model derives from ``CommonSettings`` (and ``TransportSettings`` when it speaks
RSPRO); ``remsim_common.cli.Program`` builds the parser and reports bad values.
"""

from __future__ import annotations

import contextvars
import tomllib
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .logs import LogFormat, parse_level, parse_mask

__all__ = [
    "SHARED_FIELDS",
    "CommonSettings",
    "ConfigFileError",
    "LogLevel",
    "TransportSettings",
    "config_file",
]

SHARED_PREFIX = "REMSIM_"
SHARED_FIELDS = frozenset(
    {"log_level", "debug", "log_format", "tls_cert", "tls_key", "tls_ca", "require_tls"}
)
"""Options read from ``REMSIM_<FIELD>`` too, whatever the program's own prefix."""

config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "remsim_config_file", default=None
)
"""The TOML file the settings being built read (set by ``Program.settings``)."""


class ConfigFileError(ValueError):
    """The config file cannot be read or is not TOML."""


LogLevel = Annotated[int, BeforeValidator(parse_level)]
"""A log level given as a name (``INFO``) or a libosmocore number (``3``)."""


class _SharedEnv(EnvSettingsSource):
    """``REMSIM_<FIELD>`` for the shared fields, below the program's own variables."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls, env_prefix=SHARED_PREFIX)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in SHARED_FIELDS:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class _ConfigFile(PydanticBaseSettingsSource):
    """The flat TOML file named by ``config_file``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file

    def __call__(self) -> dict[str, Any]:
        path = config_file.get()
        if path is None:
            return {}
        try:
            with path.open("rb") as file:
                return tomllib.load(file)
        except OSError as exc:
            raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from None


class CommonSettings(BaseSettings):
    """What every program has: its logging (the original's ``-d`` and ``-e``)."""

    model_config = SettingsConfigDict(env_prefix=SHARED_PREFIX, extra="forbid")

    log_level: LogLevel | None = Field(
        default=None,
        description="global log level: DEBUG, INFO, NOTICE, WARNING, ERROR, FATAL or 0..8 "
        "(default INFO, or what -d says)",
    )
    debug: str | None = Field(
        default=None, description="the original's log mask, e.g. DMAIN,1:DRSPRO,5"
    )
    log_format: LogFormat = Field(default="text", description="log lines as text or json")

    @field_validator("debug")
    @classmethod
    def _valid_mask(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mask(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _SharedEnv(settings_cls), _ConfigFile(settings_cls)


class TransportSettings(BaseSettings):
    """Socket security of a program's RSPRO links (see ``remsim_common.transport``).

    Without the three files every link is plaintext, byte-identical to the original's.
    """

    tls_cert: Path | None = Field(default=None, description="this program's certificate (PEM)")
    tls_key: Path | None = Field(default=None, description="its private key (PEM)")
    tls_ca: Path | None = Field(default=None, description="the CA that signs every peer (PEM)")
    require_tls: bool = Field(default=False, description="refuse every plaintext peer")

    @model_validator(mode="after")
    def _all_or_none(self) -> Self:
        given = [self.tls_cert is not None, self.tls_key is not None, self.tls_ca is not None]
        if any(given) and not all(given):
            raise ValueError("TLS needs all three of tls_cert, tls_key and tls_ca")
        if self.require_tls and not all(given):
            raise ValueError("require_tls needs tls_cert, tls_key and tls_ca")
        return self
