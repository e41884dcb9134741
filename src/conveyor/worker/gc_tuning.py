"""Garbage collection set for a process whose main job is a worker.

Every job allocates a few dozen short-lived objects (its fields, envelope, context, record),
which reference counting frees; CPython still counts them toward its young-generation
threshold (700 by default) and collects every dozen jobs or so, and every tenth of those
goes on to the older generations, walking every object the app and its imports made at
start. Those pauses stall the whole event loop, and with it the acks of every finished job:
they made most of the worker's ack lag above the median. Freezing what exists once the app
is loaded keeps those objects out of every later collection, and a higher young threshold
makes collections rare. Only cycles wait longer to be freed, which a few MB bounds.

Only ``serve()`` applies it (the `conveyor worker` processes): a worker embedded in another
program leaves that program's collector alone.
"""

from __future__ import annotations

import gc

#: Net allocations between young collections: ~a thousand jobs' worth of objects.
YOUNG_THRESHOLD = 50_000


def tune() -> None:
    """Freeze the objects made so far (the app, its imports) and make young collections rare."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
