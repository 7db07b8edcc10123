"""Where things are on the REST port."""

from __future__ import annotations

PREFIX = "/api/backend/v1"
"""The original's API (RSRES): its paths, JSON and statuses."""
OWN_PREFIX = "/api/v1"
"""remsim's own additions, outside the original's namespace."""
AUDIT = f"{OWN_PREFIX}/audit"
SLOTMAPS = f"{PREFIX}/slotmaps"
OWN_SLOTMAPS = f"{OWN_PREFIX}/slotmaps"
"""Slotmaps made by card (ICCID) or bank slot."""
OWN_SLOTMAPS_BATCH = f"{OWN_SLOTMAPS}:batch"
"""Up to 1,000 slotmaps in one request."""
POOL_PATHS = tuple(
    f"{OWN_PREFIX}/{what}/" for what in ("pools", "groups", "rules", "card-states", "slotmaps")
)
"""Changes under these are the operator's: pools, groups, rules, card states, leases."""

PROBES = frozenset({"/healthz", "/readyz"})
"""Liveness and readiness: open to everybody, whatever the Host or Origin."""
DOCS = frozenset({"/docs", "/redoc", "/openapi.json"})
DOCS_STATIC = "/docs/static"
"""The documentation's scripts and styles (fastapi-offline's copies)."""
UI = "/ui"
"""The dashboard (``remsim_api.ui``): its page, open to all (it asks for a token itself)."""
UI_POOLS = f"{UI}/pools"
"""The dashboard's pools view: a page too, open to all like ``UI``."""
UI_PAGES = frozenset({UI, UI_POOLS})
UI_STATIC = "/ui/static"
"""The dashboard's scripts and styles, vendored: no CDN."""
TOKEN_COOKIE = "remsim_token"
"""The cookie in which the dashboard's page keeps the bearer token (``SameSite=Strict``)."""
