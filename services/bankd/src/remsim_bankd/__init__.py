"""remsim_bankd."""
