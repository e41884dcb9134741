"""The child side of the process pool: serve calls from the pool's pipe until it closes.

A child ignores SIGINT and SIGTERM (the worker decides when children stop), exits with its
parent, imports each task by ``module:qualname`` once, and answers in JSON only: a result
JSON cannot carry is the job's final failure, an exception comes back as text.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from importlib import import_module
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_fds
from typing import Any

from ..context import JobContext, _current
from ..errors import ConfigurationError, PayloadError
from ..wire import decode_json, encode_json
from .executor import Outcome, _failure

#: Outcome.reason of a result (or arguments) that cannot cross the boundary as JSON.
BAD_RESULT = "bad_result"


def child_main(conn: Connection) -> None:
    """Serve calls until the pool closes its end of the pipe (or the parent dies)."""
    # Ctrl-C in a terminal and a SIGTERM to the whole process group are the worker's to
    # handle: it lets running jobs finish within its grace, then kills what is left.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent()
    functions: dict[str, tuple[Callable[..., Any], Any]] = {}
    try:
        conn.send_bytes(encode_json({"t": "ready", "pid": os.getpid()}))
        while True:
            request = decode_json(conn.recv_bytes())
            conn.send_bytes(_serve(conn, request, functions))
    except (EOFError, OSError):  # the pool closed its end: it is shutting down
        return


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait_fds([parent.sentinel])
        os._exit(1)  # the worker died mid-job: nobody will read this job's outcome

    threading.Thread(target=watch, name="conveyor-parent-watch", daemon=True).start()


def _serve(
    conn: Connection, request: dict[str, Any], functions: dict[str, tuple[Callable[..., Any], Any]]
) -> bytes:
    ref: str = request["fn"]
    try:
        if ref not in functions:
            functions[ref] = _resolve(ref)
        fn, task = functions[ref]
        args, kwargs = request["args"], request["kwargs"]
        if task is not None:  # JSON back to the annotated types, as in the worker
            args, kwargs = task.bind(args, kwargs)
        job = JobContext(**request["job"])
    except BaseException as exc:
        return _error(_failure(exc))
    conn.send_bytes(b'{"t":"started"}')
    token = _current.set(job)
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # SystemExit included: a task's failure is data
        return _error(_failure(exc))
    finally:
        _current.reset(token)
    try:
        return encode_json({"t": "ok", "v": value})
    except PayloadError as exc:
        error = f"PayloadError: the task's result cannot cross the process boundary as JSON: {exc}"
        return _error(Outcome(False, error=error, final=True, reason=BAD_RESULT))


def _resolve(ref: str) -> tuple[Callable[..., Any], Any]:
    """The function named ``module:qualname``, and its Task when it is one (for ``bind``)."""
    from ..task import Task

    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ConfigurationError(f"expected a task reference `module:qualname`, got {ref!r}")
    target: Any = import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if isinstance(target, Task):
        if target.is_async:
            raise ConfigurationError(f"{ref} is async: async tasks run on the worker's event loop")
        return target.fn, target
    if not callable(target):
        raise ConfigurationError(f"{ref} is a {type(target).__name__}, not a function")
    if inspect.iscoroutinefunction(target):
        raise ConfigurationError(f"{ref} is async: async tasks run on the worker's event loop")
    return target, None


def _error(outcome: Outcome) -> bytes:
    return encode_json(
        {
            "t": "err",
            "error": outcome.error,
            "traceback": outcome.traceback,
            "final": outcome.final,
            "reason": outcome.reason,
        }
    )
