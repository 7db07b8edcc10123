"""remsim_api: the RSRES REST API (``create_app``), ``remsim-api`` and ``remsim-apitool``."""

from remsim_api.app import create_app
from remsim_api.problems import ApiError

__all__ = ["ApiError", "create_app"]
