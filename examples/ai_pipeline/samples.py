"""Sample documents, and what the stand-in models must make of them (for checks)."""

from __future__ import annotations

from .tasks import clean, study, summary_tokens, vector

DOCUMENTS = [
    "<p>Redis <b>Streams</b> keep tasks until a worker acknowledges them. A worker "
    "that crashes leaves its tasks pending. Pending tasks are claimed again by another worker. "
    "Streams also keep a history of tasks for replay.</p>",
    "Invoices arrive as scanned pages. The parser extracts totals and dates from invoices. "
    "Totals that do not add up are flagged for a person to check.",
    "The support team answers tickets in three languages. Most tickets ask about refunds. "
    "Refunds over a limit need a manager's approval.",
    "Solar panels lose output when dust covers them. Cleaning panels twice a year restores "
    "most output. Rain alone does not clean panels well.",
    "The library lends books, films and tools. Tools are the newest collection and the most "
    "borrowed. Borrowed tools return after one week.",
    "Bees visit flowers for nectar and pollen. A hive needs many flowers nearby. Flowers that "
    "bloom late help bees before winter.",
]


def expected(document: str) -> tuple[list[str], list[float]]:
    """What the stand-in models make of a document: the summary's tokens and its vector."""
    tokens = summary_tokens(study(clean(document)))
    return tokens, vector(" ".join(tokens))
