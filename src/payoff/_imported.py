"""A module another part of the program imported, once its import has finished.

``sys.modules`` holds a module from the moment its import starts: a thread that
reads it while another thread still runs that import (a request's first
``import pandas``, a client library importing asyncio) finds it half made, and
``numpy.integer`` or ``asyncio.events`` raised "partially initialized module"
out of the caller's map (library trial: 9 of 10 and 10 of 10 runs). Until the
import ends, nothing of that module can be in the call either.
"""

from __future__ import annotations

import sys
from types import ModuleType


def imported(name: str) -> ModuleType | None:
    """``sys.modules[name]`` if its import has ended; None if it never started or is still running."""
    module = sys.modules.get(name)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module
