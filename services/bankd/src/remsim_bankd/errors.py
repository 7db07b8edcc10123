"""The exception hierarchy of the bankd: every error it raises derives from ``BankdError``
(card driver errors from ``card.CardError``)."""


class BankdError(Exception):
    """Base class of the bankd's own errors."""


class ConfigError(BankdError):
    """Bad configuration: the bankd cannot start."""
