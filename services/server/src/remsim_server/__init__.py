"""remsim_server: the control server (RSPRO control core, embedding the REST API).

``ControlCore`` holds the bankd and client control connections; ``RemsimServer`` runs it
together with the REST API in one event loop (``remsim-server``).
"""

from remsim_server.core import ControlCore
from remsim_server.server import RemsimServer
from remsim_server.settings import ServerSettings

__all__ = ["ControlCore", "RemsimServer", "ServerSettings"]
