"""remsim_control."""
