"""remsim's well-known TCP ports (the original's), in one place."""

from __future__ import annotations

REST_PORT = 9997
"""The REST API (RSRES) of ``remsim-server`` / ``remsim-api``."""

CONTROL_PORT = 9998
"""RSPRO control: bankds and clients connect to the server here."""

BANKD_PORT = 9999
"""RSPRO card traffic: clients connect to their bankd here."""

LISTEN_BACKLOG = 1024
"""Listen backlog of the HTTP sockets (REST): a burst of connects is queued, not dropped.
(``rspro.aio`` has its own for the RSPRO listeners: rspro depends on nothing of ours.)"""
