"""A small asyncio TCP proxy that injects network faults between clients and one Redis.

Modes (they combine):

- pass: bytes flow unchanged;
- latency with jitter: every chunk is delayed ``mean +- jitter`` seconds (order is kept);
- reset: every open connection is closed with a TCP RST (SO_LINGER 0), at once;
- blackhole: connections are accepted but nothing is delivered in either direction until the
  blackhole ends (a partition that heals: held bytes are then delivered, as TCP would);
- drop: a fraction of server replies is lost; the connection then goes silent for good, so
  the client sees a reply that never comes (its socket timeout fires), never a desynchronised
  stream.

The proxy runs its own event loop on a thread; control methods are thread-safe. It records
when each client connection was accepted, to measure reconnect storms.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from tests.redis_servers import free_port


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    silent: bool = False  # a reply was dropped: nothing more flows on this connection
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class ChaosProxy:
    def __init__(self, target_host: str, target_port: int, *, seed: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.rng = random.Random(seed)
        self.latency = (0.0, 0.0)
        self.drop_fraction = 0.0
        self.accepts: list[float] = []  # monotonic time of every accepted connection
        self.resets = 0
        self.dropped = 0
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._healed: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")

    # -- control (any thread) ------------------------------------------------------------------
    def start(self) -> ChaosProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_latency(self, mean: float, jitter: float = 0.0) -> None:
        self.latency = (mean, jitter)

    def set_drop(self, fraction: float) -> None:
        self.drop_fraction = fraction

    def reset_all(self) -> int:
        """RST every open connection; returns how many were open."""
        return asyncio.run_coroutine_threadsafe(self._reset_all(), self._loop).result(10)

    def blackhole(self, on: bool) -> None:
        def flip() -> None:
            assert self._healed is not None
            if on:
                self._healed.clear()
            else:
                self._healed.set()

        self._loop.call_soon_threadsafe(flip)

    def max_accepts_in(self, window: float, since: float = 0.0) -> int:
        """The most connections accepted within any ``window`` seconds after ``since``."""
        times = sorted(t for t in self.accepts if t >= since)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] > window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # -- event loop side -----------------------------------------------------------------------
    async def _start(self) -> None:
        self._healed = asyncio.Event()
        self._healed.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _reset_all(self) -> int:
        conns = list(self._conns)
        for c in conns:
            self._abort(c)
        self.resets += 1
        return len(conns)

    def _abort(self, c: _Conn) -> None:
        for w in (c.client, c.upstream):
            if w is None:
                continue
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
        for t in c.tasks:
            t.cancel()
        self._conns.discard(c)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts.append(time.monotonic())
        conn = _Conn(client=writer)
        self._conns.add(conn)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._abort(conn)
            return
        conn.upstream = up_writer
        to_server: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        to_client: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        conn.tasks = [
            asyncio.create_task(self._read(reader, to_server, conn)),
            asyncio.create_task(self._read(up_reader, to_client, conn)),
            asyncio.create_task(self._deliver(to_server, up_writer, conn, reply=False)),
            asyncio.create_task(self._deliver(to_client, writer, conn, reply=True)),
        ]
        await asyncio.gather(*conn.tasks, return_exceptions=True)

    async def _read(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]], c: _Conn
    ) -> None:
        last = 0.0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                mean, jitter = self.latency
                delay = max(0.0, mean + self.rng.uniform(-jitter, jitter)) if mean else 0.0
                last = max(last, time.monotonic() + delay)  # keep the byte order
                queue.put_nowait((last, data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        # One side closed (or broke): close the whole connection once queued bytes are out.
        queue.put_nowait((last, b""))

    async def _deliver(
        self,
        queue: asyncio.Queue[tuple[float, bytes]],
        writer: asyncio.StreamWriter,
        c: _Conn,
        *,
        reply: bool,
    ) -> None:
        assert self._healed is not None
        try:
            while True:
                at, data = await queue.get()
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._healed.wait()
                if not data:
                    break
                if c.silent:
                    continue
                if reply and self.drop_fraction and self.rng.random() < self.drop_fraction:
                    c.silent = True
                    self.dropped += 1
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            self._abort(c)  # one direction ended: so does the connection
