"""``python -m remsim_client.vpcd``: ``remsim-client-vpcd``."""

from .cli import main

main()
