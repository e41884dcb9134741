"""streaq: `streaq run module:worker --workers P`, async tasks, concurrency 16 per process (its
default). Results are kept (streaq stores every task's result: ttl 5 min by default)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from streaq import Worker

from ._record import abegin, record, slots, url

LABEL = "streaq"
RESULTS = "yes (result kept: the default)"
CONCURRENCY = 16
IO_SLOTS = 100
#: `streaq run --workers N` starts N-1 extra processes that the main one waits for on exit but
#: does not signal: stop them all the way Ctrl-C in a terminal does, by signalling the group.
STOP_GROUP = True

worker = Worker(redis_url=url(), concurrency=slots(CONCURRENCY))


@worker.task()
async def noop(i: int) -> None:
    record(i, await abegin())


@worker.task()
async def sleep(i: int) -> None:
    start = await abegin()
    await asyncio.sleep(0.05)
    record(i, start)


TASKS = {"noop": noop, "sleep": sleep}


def _warning_log_config() -> None:
    """streaq's CLI logs at INFO (or DEBUG with -v) and has no other level: lower it to WARNING
    by wrapping the function the CLI builds its logging config with (read at call time)."""
    cli = sys.modules.get("streaq.cli")
    if cli is None or getattr(cli, "_bench_patched", False):
        return
    original = cli.default_log_config

    def warning_config(*args: Any, **kwargs: Any) -> dict[str, Any]:
        config: dict[str, Any] = original(*args, **kwargs)
        for section in ("handlers", "loggers"):
            for entry in config.get(section, {}).values():
                entry["level"] = "WARNING"
        return config

    cli.default_log_config = warning_config
    cli._bench_patched = True


_warning_log_config()


def workers(bin_dir: str, processes: int, io: bool) -> tuple[list[list[str]], dict[str, str], str]:
    n = IO_SLOTS if io else CONCURRENCY
    argv = [f"{bin_dir}/streaq", "run", "bench.peers.streaq_peer:worker", "--workers"]
    argv.append(str(processes))
    return [argv], {"BENCH_SLOTS": str(n)}, f"streaq run --workers {processes}, concurrency={n}"


class AsyncProducer:
    async def start(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        await self.stack.enter_async_context(worker)

    async def enqueue(self, task: str, i: int) -> None:
        await TASKS[task].enqueue(i)

    async def enqueue_many(self, task: str, ids: list[int]) -> None:
        fn = TASKS[task]
        for start in range(0, len(ids), 1000):
            await worker.enqueue_many([fn.enqueue(i) for i in ids[start : start + 1000]])

    async def close(self) -> None:
        await self.stack.aclose()


PRODUCERS = {"async": AsyncProducer}
