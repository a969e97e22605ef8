"""What a library of this package that split its work into items itself tells the core about a call.

The calibrated-explanations executor hands the core a few tasks of many
instances each, sized and weighed by itself. The core cannot see inside an
item, so the library says what it knows: whether the work stays in the
caller and why, a decision it takes after the first item ran, its own price
of a loop over the work, and what the items were in its user's words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from payoff.planning import Decide
from payoff.reasons import Reason
from payoff.record import SerialPrice


@dataclass(frozen=True)
class LibraryCall:
    """One call's worth of what the library knows; ``NO_LIBRARY`` for a caller's own items, which say nothing."""

    serial_because: tuple[Reason, str] | None = None
    """The library decided the work runs in the caller, and why (recorded as that fallback)."""
    decide_after_first: Decide | None = None
    """Or it decides once the first item ran in the caller (``planning.Call.decide_after_first``)."""
    serial_price: SerialPrice | None = None
    """Its own estimate of one loop over the work, for the record (``record.SerialPrice``)."""
    items_said: Callable[[], str] | None = None
    """The items in its user's words, asked when the record is built (``MapRecord.items_said``): a call of 50
    instances in 7 planned tasks, 2 of which ran, was told as "7 items ran serially"."""
    asked: str | None = None
    """The strategy its user asked for, where the library runs another it chose for it (``auto``, which the
    calibrated-explanations executor runs as processes): the record and telemetry name what the user asked,
    and a backend the library chose is auto's decision, not a named one (trial 50)."""


NO_LIBRARY = LibraryCall()
