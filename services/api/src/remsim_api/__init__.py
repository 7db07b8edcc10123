"""remsim_api."""
