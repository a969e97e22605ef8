"""Drop-in executors for libraries that accept a third-party parallel executor.

Each integration lives in its own module and imports its library only when
used, so ``import payoff`` never pulls in optional dependencies:

- :mod:`payoff.integrations.calibrated_explanations` (the ``[ce]`` extra):
  ``enable(wrapper)`` makes calibrated-explanations 1.0.2 run its explanations
  on payoff, measured and with visible fallbacks.
"""

from __future__ import annotations

__all__: list[str] = []
