"""A call that must not run twice (a plain enqueue) is sent exactly once.

redis-py's retry resent an XADD whose reply was only late, so one ``enqueue()`` added two
jobs. These tests put a TCP proxy between the client and Redis that holds replies back on
the connections open when it is told to (later connections are fast, so a resend would
succeed), and check: one entry in the stream, and EnqueueUncertain for the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from conveyor import Conveyor
from conveyor.broker import Broker, Call, ClientOptions, command
from conveyor.errors import ConnectionFailed, EnqueueUncertain

#: the client gives up after TIMEOUT; the reply comes after DELAY
TIMEOUT, DELAY = 1.0, 2.0


class SlowReplyProxy:
    """A loopback TCP proxy to one Redis. ``slow()`` holds back the replies of every
    connection open at that moment by ``DELAY`` seconds; ``refuse(n)`` closes the next ``n``
    connections as soon as they are accepted (a Redis that is not reachable yet)."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}{parts.path or '/0'}"
        self.accepted = 0
        self._refuse = 0
        self._open: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def slow(self) -> None:
        with self._lock:
            for conn in self._open:
                conn["delay"] = DELAY

    def refuse(self, n: int) -> None:
        self._refuse = n

    def close(self) -> None:
        self._stopped.set()
        for t in self._threads:
            t.join(5)
        self.listener.close()
        with self._lock:
            for conn in self._open:
                for s in conn["sockets"]:  # type: ignore[attr-defined]
                    with contextlib.suppress(OSError):
                        s.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            if self._refuse:
                self._refuse -= 1
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            conn: dict[str, object] = {"delay": 0.0, "sockets": (client, upstream)}
            with self._lock:
                self._open.append(conn)
            for src, dst, replies in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pump, args=(src, dst, conn, replies))
                t.daemon = True
                t.start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, conn: dict[str, object], replies: bool
    ) -> None:
        try:
            while data := src.recv(65536):
                if replies and conn["delay"]:
                    time.sleep(float(conn["delay"]))  # type: ignore[arg-type]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(redis_url: str) -> Iterator[SlowReplyProxy]:
    p = SlowReplyProxy(redis_url)
    yield p
    p.close()


@pytest.fixture
def stream(namespace: str, r: redis.Redis) -> Iterator[str]:
    key = f"{namespace}:once"
    yield key
    r.delete(key)


def xadd(stream: str) -> Call[bytes]:
    """A hand-built plain enqueue: one XADD that must not be sent twice."""
    return Call(("XADD", stream, "*", "task", "echo"), lambda reply: reply, retry_safe=False)


def options() -> ClientOptions:
    return ClientOptions(socket_timeout=TIMEOUT)


def assert_uncertain(exc: EnqueueUncertain, url: str) -> None:
    text = str(exc)
    assert url in text and "unique_key" in text and "may or may not" in text
    assert "\n" not in text


def test_a_late_reply_raises_uncertain_and_the_call_is_not_resent(
    proxy: SlowReplyProxy, stream: str, r: redis.Redis
) -> None:
    broker = Broker(proxy.url, options())
    try:
        broker.call(command("PING"))  # connected and fast
        proxy.slow()
        started = time.monotonic()
        with pytest.raises(EnqueueUncertain) as info:
            broker.call(xadd(stream))
        assert time.monotonic() - started < TIMEOUT + 1.0
        assert_uncertain(info.value, proxy.url)
        time.sleep(DELAY)  # any resend would have landed by now
        assert r.xlen(stream) == 1
        # The connection whose reply was late is dropped: the next call is not handed it.
        assert broker.call(xadd(stream)) and r.xlen(stream) == 2
    finally:
        broker.close()


def test_a_retry_safe_call_still_reconnects_through_a_late_reply(
    proxy: SlowReplyProxy, stream: str, r: redis.Redis
) -> None:
    """The control: calls that may run twice keep redis-py's reconnect and retry."""
    broker = Broker(proxy.url, options())
    try:
        broker.call(command("PING"))
        proxy.slow()
        assert broker.call(command("INCR", stream, parse=int)) == 2  # sent twice, answered
    finally:
        broker.close()


def test_a_bulk_of_calls_that_must_not_repeat_is_sent_once(
    proxy: SlowReplyProxy, stream: str, r: redis.Redis
) -> None:
    broker = Broker(proxy.url, options())
    try:
        broker.call(command("PING"))
        proxy.slow()
        with pytest.raises(EnqueueUncertain) as info:
            broker.call_many([xadd(stream), xadd(stream), command("PING")])
        assert_uncertain(info.value, proxy.url)
        time.sleep(DELAY)
        assert r.xlen(stream) == 2
        replies = broker.call_many([xadd(stream), command("ECHO", "x")])
        assert replies[1] == b"x" and r.xlen(stream) == 3
    finally:
        broker.close()


async def test_async_a_late_reply_raises_uncertain_and_the_call_is_not_resent(
    proxy: SlowReplyProxy, stream: str, r: redis.Redis
) -> None:
    broker = Broker(proxy.url, options())
    try:
        await broker.acall(command("PING"))
        proxy.slow()
        with pytest.raises(EnqueueUncertain) as info:
            await broker.acall(xadd(stream))
        assert_uncertain(info.value, proxy.url)
        await broker.acall(command("PING"))  # a new connection, fast until told
        proxy.slow()
        with pytest.raises(EnqueueUncertain):
            await broker.acall_many([xadd(stream), xadd(stream)])
        await asyncio.sleep(DELAY)
        assert r.xlen(stream) == 3
        assert await broker.acall(xadd(stream)) and r.xlen(stream) == 4
    finally:
        await broker.aclose()


def test_failing_to_connect_is_retried_since_nothing_was_sent(
    proxy: SlowReplyProxy, stream: str, r: redis.Redis
) -> None:
    proxy.refuse(2)
    broker = Broker(proxy.url, ClientOptions(retries=2, backoff_base=0.01, backoff_cap=0.05))
    try:
        assert broker.call(xadd(stream))
        assert proxy.accepted == 3 and r.xlen(stream) == 1
        proxy.refuse(100)
        broker.close()
        before = proxy.accepted
        with pytest.raises(ConnectionFailed) as info:  # not uncertain: it was never sent
            broker.call(xadd(stream))
        assert not isinstance(info.value, EnqueueUncertain)
        assert r.xlen(stream) == 1
        # One attempt and two retries, not retries nested in retries (a health-check PING
        # inside the handshake had its own: 3 x 3 here, 7 x 7 and a minute by default).
        assert proxy.accepted - before == 3
    finally:
        broker.close()


async def test_a_connection_closed_while_idle_is_replaced_not_reported_uncertain(
    redis_url: str, stream: str, r: redis.Redis
) -> None:
    """A server-side close (timeout, restart, CLIENT KILL) is seen before sending."""
    broker = Broker(redis_url, options())
    try:
        killed = broker.call(command("CLIENT", "ID", parse=int))
        r.client_kill_filter(_id=str(killed))
        assert broker.call(xadd(stream))
        akilled = await broker.acall(command("CLIENT", "ID", parse=int))
        r.client_kill_filter(_id=str(akilled))
        await asyncio.sleep(0.1)  # idle: the loop has seen the close, as it would have
        await broker.acall(xadd(stream))
        assert r.xlen(stream) == 2
    finally:
        broker.close()
        await broker.aclose()


# -- end to end: the producer marks plain enqueues as not retry-safe ----------------------------


@pytest.fixture
def slow_app(proxy: SlowReplyProxy, namespace: str) -> Iterator[Conveyor]:
    app = Conveyor(proxy.url, namespace=namespace, client_options=options())
    yield app
    app.close()


def test_enqueue_through_a_late_reply_adds_one_job_and_says_it_is_uncertain(
    slow_app: Conveyor, proxy: SlowReplyProxy, r: redis.Redis
) -> None:
    @slow_app.task
    def echo(n: int) -> int:
        return n

    stream = slow_app.keys("default").stream("normal")
    slow_app.broker.server_info()  # read once, before replies turn slow
    echo.enqueue(1)
    proxy.slow()
    with pytest.raises(EnqueueUncertain) as info:
        echo.enqueue(12345)
    assert_uncertain(info.value, proxy.url)
    slow_app.broker.call(command("PING"))  # a new connection, fast until told
    proxy.slow()
    with pytest.raises(EnqueueUncertain):
        slow_app.enqueue_many([echo.s(i) for i in range(3)])
    time.sleep(DELAY)
    assert r.xlen(stream) == 1 + 1 + 3


async def test_enqueue_async_through_a_late_reply_adds_one_job(
    slow_app: Conveyor, proxy: SlowReplyProxy, r: redis.Redis
) -> None:
    @slow_app.task
    async def echo(n: int) -> int:
        return n

    stream = slow_app.keys("default").stream("normal")
    await slow_app.broker.aserver_info()
    await echo.enqueue_async(1)
    proxy.slow()
    with pytest.raises(EnqueueUncertain):
        await echo.enqueue_async(12345)
    await slow_app.broker.acall(command("PING"))
    proxy.slow()
    with pytest.raises(EnqueueUncertain):
        await slow_app.enqueue_many_async([echo.s(i) for i in range(3)])
    await asyncio.sleep(DELAY)
    assert r.xlen(stream) == 1 + 1 + 3
    await slow_app.aclose()
