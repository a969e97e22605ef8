"""Reports of map calls for people: a text table for terminals, HTML with a task timeline for notebooks and files.

Reports read :class:`~payoff.record.MapRecord` only, like every other
observer of a call, so what a report says always matches the metrics and spans.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from payoff.record import MapRecord
from payoff.report.html import record_html, render_html
from payoff.report.text import record_text, render_text
from payoff.report.timeline import timeline_svg


class Report:
    """Some calls, shown as HTML in a notebook and as a text table by ``print``."""

    def __init__(self, records: Iterable[MapRecord], *, title: str = "payoff report") -> None:
        self.records: list[MapRecord] = list(records)
        self.title = title

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[MapRecord]:
        return iter(self.records)

    def __str__(self) -> str:
        return render_text(self.records)

    def __repr__(self) -> str:
        """The text report: a plain ``python`` prompt shows ``ex.report()`` by its repr, as a table."""
        return str(self)

    def _repr_html_(self) -> str:
        return render_html(self.records, title=self.title, full_page=False)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's terminal shows the text report too (its pretty printer does not use ``__repr__``)."""
        printer.text(str(self))

    def to_html(self, path: str | os.PathLike[str]) -> str:
        """Write the report as one self-contained HTML page; returns the path written.

        A lone surrogate in a record's text (possible in a MapRecord built by hand) is written
        as a visible escape rather than failing the whole page.
        """
        with open(path, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(render_html(self.records, title=self.title))
        return os.fspath(path)


__all__ = ["Report", "record_html", "record_text", "render_html", "render_text", "timeline_svg"]
