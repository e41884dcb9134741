"""Tables for the terminal, built so that ids can always be copied whole.

Ids (job ids, stream entry ids, queue names) are never cut or wrapped, however narrow the
terminal: their columns are as wide as their longest value and the other columns wrap
(folding long words) into the room left.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, JustifyMethod
from rich.table import Table

console = Console()


def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    ids: Sequence[str] = (),
    right: Sequence[str] = (),
) -> Table:
    """A table whose ``ids`` columns keep every value on one line, whole."""
    t = Table(title=title)
    for i, name in enumerate(columns):
        justify: JustifyMethod = "right" if name in right else "left"
        if name in ids:
            widest = max([len(name), *(len(row[i]) for row in rows)])
            t.add_column(name, justify=justify, no_wrap=True, min_width=widest)
        else:
            t.add_column(name, justify=justify, overflow="fold")
    for row in rows:
        t.add_row(*row)
    return t
