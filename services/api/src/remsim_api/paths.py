"""Where things are on the REST port."""

from __future__ import annotations

PREFIX = "/api/backend/v1"
"""The original's API (RSRES): its paths, JSON and statuses."""
OWN_PREFIX = "/api/v1"
"""remsim's own additions, outside the original's namespace."""
AUDIT = f"{OWN_PREFIX}/audit"
SLOTMAPS = f"{PREFIX}/slotmaps"

PROBES = frozenset({"/healthz", "/readyz"})
"""Liveness and readiness: open to everybody, whatever the Host or Origin."""
DOCS = frozenset({"/docs", "/redoc", "/openapi.json"})
DOCS_STATIC = "/docs/static"
"""The documentation's scripts and styles (fastapi-offline's copies)."""
