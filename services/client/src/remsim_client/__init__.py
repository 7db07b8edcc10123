"""remsim_client: the client side of remsim (client.md).

``Client`` runs the main FSM with its links to the server and the bankd for one client
slot and drives a ``ModemFrontend`` (the modem side: shell, SIMtrace2 cardem, vpcd,
``RemoteCard``).
"""

from .client import Client
from .config import ApduMode, ClientConfig
from .errors import (
    CardError,
    CardTimeoutError,
    ConfigError,
    InvalidApduError,
    LinkLostError,
    NoCardMappedError,
    RemsimClientError,
)
from .frontend import ModemCore, ModemFrontend
from .main_fsm import Cause, ClientFsm, MainState
from .remote_card import BlockingRemoteCard, RemoteCard

__all__ = [
    "ApduMode",
    "BlockingRemoteCard",
    "CardError",
    "CardTimeoutError",
    "Cause",
    "Client",
    "ClientConfig",
    "ClientFsm",
    "ConfigError",
    "InvalidApduError",
    "LinkLostError",
    "MainState",
    "ModemCore",
    "ModemFrontend",
    "NoCardMappedError",
    "RemoteCard",
    "RemsimClientError",
]
