"""``Program``: what every remsim executable does the same way.

::

    PROGRAM = Program("remsim-bankd", "remsim-bankd", categories={"DMAIN": ("remsim.bankd",)})

    def main(argv=None):
        parser = PROGRAM.parser("remsim SIM bank daemon", transport=True)
        parser.add_argument("-i", "--server-host", metavar="HOST")   # dest = the field's name
        settings = PROGRAM.load(BankdSettings, parser, argv)          # exits 2 on a bad value
        PROGRAM.setup_logging(settings)

The parser's defaults are suppressed, so an option not given defers to the environment,
the config file and the model's default (``remsim_common.settings``). Options carry no
``type=``: the settings model converts and checks every value, so a bad one is reported in
one format wherever it came from::

    remsim-bankd: bad value 'abc' for -P/--bind-port (REMSIM_BANKD_BIND_PORT): Input should
    be a valid integer, unable to parse string as an integer
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

from pydantic import ValidationError

from .logs import setup_logging
from .settings import SHARED_FIELDS, SHARED_PREFIX, CommonSettings, ConfigFileError, config_file
from .version import distribution_version

__all__ = ["Program"]

S = TypeVar("S", bound=CommonSettings)

_COMPAT = "_compat"
"""The dest of flags accepted for the original's sake and otherwise ignored."""


@dataclass(frozen=True)
class Program:
    name: str
    """The console script, as ``--version`` and error messages name it."""
    distribution: str
    """The distribution whose version ``--version`` prints."""
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The original's log categories (``-d``) and the loggers behind each."""
    version_flags: tuple[str, ...] = ("-V", "--version")
    level_flags: tuple[str, ...] = ("-e", "--log-level")
    """The clients keep ``-e`` for the event script, as the original's do."""

    @property
    def version(self) -> str:
        return distribution_version(self.distribution)

    def parser(
        self, description: str, *, epilog: str | None = None, transport: bool = False
    ) -> argparse.ArgumentParser:
        """A parser with the options every program has; ``transport`` adds the TLS ones."""
        parser = argparse.ArgumentParser(
            prog=self.name,
            description=description,
            epilog=epilog,
            argument_default=argparse.SUPPRESS,
        )
        add = parser.add_argument
        add(*self.version_flags, action="version", version=f"{self.name} {self.version}")
        add("--config", metavar="FILE", help="read options from this TOML file")
        add("-d", "--debug", metavar="MASK", help="log mask, e.g. DMAIN,1:DRSPRO,5")
        add(*self.level_flags, dest="log_level", metavar="LEVEL",
            help="global log level: DEBUG, INFO, NOTICE, ERROR or 1..8 (INFO)")  # fmt: skip
        add("--log-format", metavar="{text,json}", help="log line format (text)")
        add("-T", "--timestamp", dest=_COMPAT, action="append_const", const="T",
            help="accepted for compatibility: log lines always have timestamps")  # fmt: skip
        add("-L", "--disable-color", dest=_COMPAT, action="append_const", const="L",
            help="accepted for compatibility: logs are never coloured")  # fmt: skip
        if transport:
            add("--tls-cert", metavar="FILE", help="certificate for TLS on the RSPRO links")
            add("--tls-key", metavar="FILE", help="its private key")
            add("--tls-ca", metavar="FILE", help="CA certificate that peers must chain to")
            add("--require-tls", action="store_const", const=True,
                help="refuse plaintext peers (needs the three TLS files)")  # fmt: skip
        return parser

    def load(
        self,
        settings_cls: type[S],
        parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None,
    ) -> S:
        """Parse ``argv`` and build the settings; on a bad value print it and exit 2."""
        return self.settings(settings_cls, parser.parse_args(argv), parser)

    def settings(
        self, settings_cls: type[S], args: argparse.Namespace, parser: argparse.ArgumentParser
    ) -> S:
        """The settings from parsed ``args`` (only the attributes that are fields count)."""
        given: dict[str, Any] = {
            key: value for key, value in vars(args).items() if key in settings_cls.model_fields
        }
        prefix = str(settings_cls.model_config.get("env_prefix", ""))
        path = getattr(args, "config", None) or os.environ.get(f"{prefix}CONFIG")
        token = config_file.set(Path(path) if path else None)
        try:
            return settings_cls(**given)
        except ValidationError as exc:
            if any(e["type"] == "missing" for e in exc.errors()):
                parser.print_usage(sys.stderr)  # as the original does for a missing option
            self._fail(parser, [self._problem(parser, prefix, e) for e in exc.errors()])
        except ConfigFileError as exc:
            self._fail(parser, [str(exc)])
        finally:
            config_file.reset(token)

    def setup_logging(self, settings: CommonSettings, stream: TextIO | None = None) -> None:
        setup_logging(
            level=settings.log_level,
            mask=settings.debug,
            log_format=settings.log_format,
            categories=self.categories,
            stream=stream,
        )

    # --- errors ---------------------------------------------------------------------------

    def _fail(self, parser: argparse.ArgumentParser, problems: list[str]) -> NoReturn:
        parser.exit(2, "".join(f"{self.name}: {problem}\n" for problem in problems))

    @staticmethod
    def _problem(parser: argparse.ArgumentParser, prefix: str, error: Any) -> str:
        """One line: the option (flags, variable), the value, what is allowed."""
        loc = [str(part) for part in error["loc"]]
        name = loc[0] if loc else ""
        reason = str(error["msg"]).removeprefix("Value error, ")
        if not name:  # a check across options
            return f"bad options: {reason}"
        where = _option_names(parser, name, prefix)
        if error["type"] == "missing":
            return f"missing {where}"
        if error["type"] == "extra_forbidden":
            return f"unknown option {name!r} in the config file"
        value = error.get("input")
        return f"bad value {value!r} for {where}: {reason}"


def _option_names(parser: argparse.ArgumentParser, name: str, prefix: str) -> str:
    flags = next(
        ("/".join(action.option_strings) for action in parser._actions if action.dest == name),
        "",
    )
    env = f"{prefix}{name.upper()}"
    if name in SHARED_FIELDS and prefix != SHARED_PREFIX:
        env += f" or {SHARED_PREFIX}{name.upper()}"
    return f"{flags} ({env})" if flags else env
