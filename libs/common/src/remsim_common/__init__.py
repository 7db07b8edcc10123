"""remsim's platform layer, shared by every program and depending on nothing heavy.

- ``cli.Program``: the parser with the common options, ``--version`` (``NAME VERSION``),
  settings loading with one error format, logging setup.
- ``settings``: ``CommonSettings`` and ``TransportSettings`` (flag > ``<PREFIX>*`` env >
  ``REMSIM_*`` env for shared options > TOML config file > default).
- ``logs``: stderr logging, text or one JSON layout, the original's ``-d``/``-e`` rules.
- ``health``: the ``/healthz``, ``/readyz``, ``/metrics`` endpoint (ASGI, on uvicorn) and
  per-component metric registries.
- ``transport.TransportSecurity``: the socket security of every RSPRO listener and connector.
- ``ports``: the well-known ports.
"""

from .cli import Program
from .health import HealthEndpoint, HealthServer, component_registry, exposition
from .logs import NOTICE, log_extra, parse_level, setup_logging
from .ports import BANKD_PORT, CONTROL_PORT, REST_PORT
from .settings import CommonSettings, LogLevel, TransportSettings
from .transport import PeerIdentity, TransportSecurity, peer_uris
from .version import distribution_version, version_line

__all__ = [
    "BANKD_PORT",
    "CONTROL_PORT",
    "NOTICE",
    "REST_PORT",
    "CommonSettings",
    "HealthEndpoint",
    "HealthServer",
    "LogLevel",
    "PeerIdentity",
    "Program",
    "TransportSecurity",
    "TransportSettings",
    "component_registry",
    "distribution_version",
    "exposition",
    "log_extra",
    "parse_level",
    "peer_uris",
    "setup_logging",
    "version_line",
]
