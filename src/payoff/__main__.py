"""``python -m payoff``."""

import sys

from payoff.cli import main

sys.exit(main())
