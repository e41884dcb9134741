"""Failures: retries with exponential backoff and jitter, a timeout, dead letters, replay.

Covers the tutorial's retry loop and its `queue:failed` list ("for debugging and manual
replay"), its advice against retry storms (exponential backoff), and the streams document's
"long-running operations that need retry" (a model call that times out).

- charge_card fails twice (gateway down), then succeeds on its third attempt;
- embed_document times out on its first attempt (timeout=0.3 s) and succeeds on the retry;
- import_invoice always fails: after 1 + retries attempts it lands in the dead-letter stream,
  with its error, traceback and the history of every attempt. We inspect it, "fix the bug"
  and replay it, and it completes.

Run it:  python examples/retries_and_dead_letters.py
The same from a shell:  conveyor dead ls|show|replay --app examples.retries_and_dead_letters:app
-q payments
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys

from conveyor import Backoff, Conveyor, Job, JobFailed, dead_letters
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-retries-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE, default_queue="payments")
attempts: dict[str, int] = {}
invoice_parser_fixed = False


def count(name: str) -> int:
    attempts[name] = attempts.get(name, 0) + 1
    return attempts[name]


# Retry delays grow 0.2, 0.4, 0.8 ... up to 2 s; each delay is drawn uniformly below that
# ceiling ("full jitter"), so a burst of failures does not come back as a burst of retries.
@app.task(retries=3, backoff=Backoff(base=0.2, cap=2.0, jitter=True))
def charge_card(order_id: str, cents: int) -> str:
    if count(order_id) <= 2:
        raise ConnectionError("payment gateway unavailable")
    return f"charged {cents} cents for {order_id}"


@app.task(retries=2, backoff=0.1, timeout=0.3)
async def embed_document(doc_id: str) -> list[float]:
    if count(doc_id) == 1:
        await asyncio.sleep(5)  # a stuck GPU call: cancelled after 0.3 s and retried
    return [0.1, 0.2, 0.3]


@app.task(retries=2, backoff=0.1)
def import_invoice(path: str) -> str:
    if not invoice_parser_fixed:
        raise ValueError(f"{path} is not valid XML")
    return f"imported {path}"


async def show_retries(charge: Job[str], embed: Job[list[float]]) -> bool:
    """Both jobs failed at first and succeeded on a retry."""
    print(await charge.result_async(timeout=20))
    record = (await charge.info_async()).record
    print(f"  ...on attempt {record.attempt if record else '?'}")
    print(f"embedding {await embed.result_async(timeout=20)} after one timeout")
    return record is not None and record.attempt == 3


async def inspect_and_replay(invoice: Job[str]) -> bool:
    """The invoice job is dead: read its dead-letter entry, fix the bug, replay it."""
    global invoice_parser_fixed
    try:
        await invoice.result_async(timeout=20)
        return False
    except JobFailed as exc:
        print(f"{invoice.id} is dead: {exc.error}")

    dead = dead_letters.list_dead(app, "payments")
    ok = len(dead) == 1 and dead[0].job_id == invoice.id and dead[0].reason == "failed"
    entry = dead[0]
    history = entry.history  # every attempt, from the entry's dead_history field
    print(f"dead-letter entry {entry.entry_id}: reason={entry.reason} error={entry.error!r}")
    for h in history:
        print(f"  attempt {h['attempt']}: {h['error']}")
    print("  traceback ends with:", entry.fields["dead_traceback"].strip().splitlines()[-1])
    ok &= len(history) == 3

    invoice_parser_fixed = True  # deploy the fix, then replay the dead job
    replayed = dead_letters.replay(app, "payments", entry.entry_id)
    print(f"replayed as {replayed}: {await app.job(invoice.id).result_async(timeout=20)}")
    return ok and replayed == invoice.id and not dead_letters.list_dead(app, "payments")


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    print("backoff ceilings:", [charge_card.options.backoff.ceiling(n) for n in range(1, 6)])
    try:
        async with worker_task(app) as worker:
            charge = await charge_card.enqueue_async("order-17", 1999)
            embed = await embed_document.enqueue_async("doc-9")
            invoice = await import_invoice.enqueue_async("inv-2026-06.xml")
            ok = await show_retries(charge, embed)
            ok &= await inspect_and_replay(invoice)
    finally:
        delete_namespace(app)
    print(f"counts {worker.counts}")
    print("retried, dead-lettered and replayed as expected" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
