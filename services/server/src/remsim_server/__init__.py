"""remsim_server."""
