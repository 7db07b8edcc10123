"""The exception hierarchy of the bankd (card drivers have their own, see ``card``)."""


class BankdError(Exception):
    """Base class of the bankd's own errors."""


class ConfigError(BankdError):
    """Bad configuration: the bankd cannot start."""
