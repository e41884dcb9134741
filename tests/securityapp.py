"""An app whose dead-letter views mask arguments, for the redaction test of the CLI."""

from __future__ import annotations

import os

from conveyor import Conveyor


def _mask(task: str, fields: dict[str, str]) -> dict[str, str]:
    fields["args"] = "[redacted]"
    return fields


app = Conveyor(namespace=os.environ.get("TEST_NAMESPACE", "securityapp"), redact=_mask)


@app.task(retries=0)
def charge(card_number: str) -> None:
    raise RuntimeError("card declined")
