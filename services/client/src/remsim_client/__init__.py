"""remsim_client."""
