"""``python -m remsim_client.st2``: list or check card-emulation interfaces."""

import sys

from .cli import main

sys.exit(main())
