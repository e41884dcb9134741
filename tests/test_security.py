"""Security baseline: signed envelopes, nesting limits, redaction, ACL users and TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conveyor import ConfigurationError, Conveyor, JobFailed, JobState
from conveyor.testing import delete_namespace, worker_thread
from tests.conftest import wait_until
from tests.redis_servers import RedisServer, free_port

K_OLD = b"old-key-0123456789abcdef"
K_NEW = b"new-key-0123456789abcdef"


def _dead_reasons(app: Conveyor) -> list[bytes]:
    entries = app.broker.client.xrange(app.keys("default").dead)
    return [fields[b"dead_reason"] for _, fields in entries]


def test_signed_jobs_run_and_unsigned_or_tampered_entries_are_dead_lettered(
    redis_url: str, namespace: str
) -> None:
    app = Conveyor(redis_url, namespace=namespace, signing_keys=[K_NEW])

    @app.task
    def double(n: int) -> int:
        return 2 * n

    good = double.enqueue(21)
    stream = app.keys("default").stream("normal")
    client = app.broker.client
    raw = {"version": 1, "task": "double", "args": "[1]", "kwargs": "{}"}
    unsigned = client.xadd(stream, raw)
    [(_, fields)] = [e for e in client.xrange(stream) if e[1].get(b"id") == good.id.encode()]
    tampered = dict(fields)
    tampered[b"args"] = b"[1000]"  # the signature of [21] no longer matches
    forged = client.xadd(stream, tampered)
    dead = app.keys("default").dead
    with worker_thread(app):
        assert good.result(timeout=10) == 42
        wait_until(lambda: client.xlen(dead) >= 2, 10, "both bad entries dead-lettered")
    # A rejected entry's id cannot be trusted, so no job record is written for it: the dead
    # stream says what happened, naming the entries.
    entries = client.xrange(dead)
    assert [f[b"dead_reason"] for _, f in entries] == [b"bad_signature", b"bad_signature"]
    assert all(b"not signed" in f[b"dead_error"] for _, f in entries)
    # Slots reject the two at once, so their order in the dead stream is not fixed.
    assert sorted(f[b"dead_from"] for _, f in entries) == sorted(
        [b"normal:" + unsigned, b"normal:" + forged]
    )


def test_key_rotation_verifies_old_keys_and_retries_are_resigned(
    redis_url: str, namespace: str
) -> None:
    old_producer = Conveyor(redis_url, namespace=namespace, signing_keys=[K_OLD])
    worker_app = Conveyor(redis_url, namespace=namespace, signing_keys=[K_NEW, K_OLD])
    tries: list[int] = []
    for app in (old_producer, worker_app):

        @app.task(name="flaky", retries=2, backoff=0.05)
        def flaky(n: int) -> int:
            tries.append(n)
            if len(tries) < 2:
                raise RuntimeError("first try fails")
            return n

    job = old_producer.get_task("flaky").enqueue(7)
    with worker_thread(worker_app):
        # Signed with the old key, retried with a copy the worker signed with the new one.
        assert job.result(timeout=10) == 7
    assert tries == [7, 7]
    strict = Conveyor(redis_url, namespace=namespace, signing_keys=[K_NEW])

    @strict.task(name="flaky")
    def flaky_strict(n: int) -> int:
        return n

    old_producer.get_task("flaky").enqueue(8)
    dead = strict.keys("default").dead
    with worker_thread(strict):
        wait_until(lambda: strict.broker.client.xlen(dead) >= 1, 10, "old-key job refused")
    assert _dead_reasons(strict) == [b"bad_signature"]
    assert tries == [7, 7]


def _entry_of(app: Conveyor, job_id: str, level: str = "normal") -> dict[bytes, bytes]:
    stream = app.keys("default").stream(level)
    [(_, fields)] = [
        e for e in app.broker.client.xrange(stream) if e[1].get(b"id") == job_id.encode()
    ]
    return dict(fields)


def test_a_signed_copy_retargeted_at_another_job_attempt_or_level_is_refused(
    redis_url: str, namespace: str
) -> None:
    # The attack of issue 8 (item 4): copies of a signed entry with `id` set to another job's
    # id, a later attempt, or moved to the high stream. The old signature covered only the
    # task and arguments, so they all ran and the victim's record was overwritten.
    app = Conveyor(redis_url, namespace=namespace, signing_keys=[K_NEW])
    runs: list[int] = []

    @app.task
    def double(n: int) -> int:
        runs.append(n)
        return 2 * n

    victim = double.enqueue(1)
    with worker_thread(app):
        assert victim.result(timeout=10) == 2
    record_key = app.keys("default").record(victim.id)
    victim_record = app.broker.client.get(record_key)
    client = app.broker.client
    keys = app.keys("default")
    source = double.enqueue(5)
    original = _entry_of(app, source.id)
    retargeted = {**original, b"id": victim.id.encode()}
    later = {**original, b"attempt": b"3"}
    combined = {**original, b"id": victim.id.encode(), b"attempt": b"3"}
    client.delete(keys.stream("normal"))  # only the forgeries remain to be read
    for forged, level in ((retargeted, "normal"), (later, "normal"), (combined, "high")):
        client.xadd(keys.stream(level), forged)  # type: ignore[arg-type]
    client.xadd(keys.stream("high"), original)  # type: ignore[arg-type]  # same, but high
    with worker_thread(app):
        wait_until(lambda: client.xlen(keys.dead) >= 4, 10, "four forgeries dead-lettered")
    assert _dead_reasons(app) == [b"bad_signature"] * 4
    assert runs == [1]
    assert client.get(record_key) == victim_record


def test_signed_jobs_carry_a_signed_minted_id_and_their_status_is_found(
    redis_url: str, namespace: str
) -> None:
    app = Conveyor(redis_url, namespace=namespace, signing_keys=[K_NEW])

    @app.task
    def echo(x: str) -> str:
        return x

    one = echo.enqueue("a")
    many = echo.enqueue_many([("b",), ("c",)])
    unique = echo.using(unique_key="k").enqueue("d")
    again = echo.using(unique_key="k").enqueue("e")
    high = echo.using(priority="high").enqueue("f")
    jobs = [one, *many, unique, high]
    assert all(j.id.startswith("default:d:") for j in jobs)
    assert len({j.id for j in jobs}) == 5
    assert (again.id, again.created) == (unique.id, False)
    assert [j.status() for j in jobs] == [JobState.QUEUED] * 5
    assert app.broker.client.xlen(app.keys("default").stream("normal")) == 4
    signer = app.signer
    assert signer is not None
    entry = _entry_of(app, high.id, "high")
    assert signer.verify(entry, "default", "high")
    assert not signer.verify(entry, "default", "normal")
    assert not signer.verify(entry, "other", "high")
    with worker_thread(app):
        assert [j.result(timeout=10) for j in jobs] == ["a", "b", "c", "d", "f"]
    assert [j.status() for j in jobs] == [JobState.DONE] * 5


def test_a_delayed_signed_job_is_signed_for_the_stream_it_is_promoted_to(
    redis_url: str, namespace: str
) -> None:
    app = Conveyor(redis_url, namespace=namespace, signing_keys=[K_NEW])

    @app.task(priority="low")
    def later(x: int) -> int:
        return x + 1

    job = later.enqueue_in(0.05, 41)
    with worker_thread(app):
        assert job.result(timeout=10) == 42


def test_short_signing_keys_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="16 bytes"):
        Conveyor(signing_keys=[b"short"])


def test_arguments_nested_too_deep_are_dead_lettered_not_crashing_the_worker(
    app: Conveyor,
) -> None:
    @app.task
    def take(x: object) -> None:
        return None

    stream = app.keys("default").stream("normal")
    client = app.broker.client
    client.xadd(stream, {"task": "take", "args": "[" * 100 + "]" * 100, "kwargs": "{}"})
    client.xadd(stream, {"task": "take", "args": "[" * 200_000 + "]" * 200_000, "kwargs": "{}"})
    ok = take.enqueue([[1]])
    with worker_thread(app):
        ok.result(timeout=15)
    dead = client.xrange(app.keys("default").dead)
    assert [f[b"dead_reason"] for _, f in dead] == [b"malformed", b"malformed"]
    errors = b" ".join(f[b"dead_error"] for _, f in dead)
    assert b"nested more than 64 levels" in errors and b"recursion" in errors


def test_dead_letter_views_use_the_apps_redaction_hook(redis_url: str, namespace: str) -> None:
    env = dict(os.environ, CONVEYOR_REDIS_URL=redis_url, TEST_NAMESPACE=namespace)
    from tests.securityapp import charge

    app = Conveyor(redis_url, namespace=namespace)
    app.task(name="charge", retries=0)(charge.fn)
    job = app.get_task("charge").enqueue("4111-1111-1111-1111")
    with worker_thread(app), pytest.raises(JobFailed):
        job.result(timeout=10)
    base = [sys.executable, "-m", "conveyor", "dead"]
    listing = subprocess.run(
        [*base, "ls", "--app", "tests.securityapp:app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    entry = app.broker.client.xrange(app.keys("default").dead)[0][0].decode()
    shown = subprocess.run(
        [*base, "show", entry, "--app", "tests.securityapp:app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "declined" in listing and "failed" in listing
    assert "args: [redacted]" in shown
    assert "4111" not in listing + shown


# -- ACL users and TLS, on private servers ------------------------------------------------------
# The README's lists: enqueue (immediate, delayed, unique), status and result waits.
PRODUCER_COMMANDS = (
    "+xadd +evalsha +script|load +info +ping +subscribe +unsubscribe "
    "+get +set +zadd +hset +time +zscore +exists +xpending +xrange +xinfo"
)
WORKER_COMMANDS = (
    "+xreadgroup +xack +xadd +xclaim +xautoclaim +xpending +xinfo +xgroup +xrange +xtrim +xlen "
    "+zadd +zrem +zrange +zrangebyscore +zscore +zcard +hset +hget +hdel +set +get +del +exists "
    "+publish +time +evalsha +script|load +info +ping +client|id +client|unblock "
    "+scard +srem +sismember +smismember +pexpire +zremrangebyscore"
)


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        for user, commands in (("producer", PRODUCER_COMMANDS), ("worker", WORKER_COMMANDS)):
            admin.execute_command(
                "ACL",
                "SETUSER",
                user,
                "on",
                f">{user}-secret",
                "resetkeys",
                "~acl:*",
                "resetchannels",
                "&acl:*",
                "-@all",
                *commands.split(),
            )
        admin.execute_command("ACL", "SETUSER", "default", "off")
        admin.close()
        yield server


def test_restricted_acl_users_can_produce_and_work(acl_server: RedisServer) -> None:
    port = acl_server.port
    producer = Conveyor(f"redis://producer:producer-secret@127.0.0.1:{port}/0", namespace="acl")
    worker = Conveyor(f"redis://worker:worker-secret@127.0.0.1:{port}/0", namespace="acl")
    for a in (producer, worker):

        @a.task(name="echo", retries=1, backoff=0.05)
        def echo(text: str) -> str:
            return text

    jobs = [producer.get_task("echo").enqueue(f"hi {i}") for i in range(20)]
    later = producer.get_task("echo").using(unique_key="once").enqueue_in(0.2, "later")
    with worker_thread(worker):
        assert [j.result(timeout=15) for j in jobs] == [f"hi {i}" for i in range(20)]
        assert later.result(timeout=15) == "later"
    assert jobs[0].status() is JobState.DONE
    with pytest.raises(redis.ResponseError, match="no permissions"):
        producer.broker.client.execute_command("FLUSHALL")
    producer.close()
    worker.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    tls_port = free_port()
    args = [
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
    ]
    with RedisServer(extra_args=args) as server:
        yield server, tls_port, cert


def test_worker_and_producer_over_tls(tls_server: tuple[RedisServer, int, Path]) -> None:
    _, tls_port, cert = tls_server
    app = Conveyor(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}", namespace="tls")

    @app.task
    async def shout(text: str) -> str:
        return text.upper()

    job = shout.enqueue("secure")
    with worker_thread(app):
        assert job.result(timeout=15) == "SECURE"
    assert json.loads(app.broker.client.get(app.keys("default").record(job.id)))["state"] == "done"
    delete_namespace(app)
    app.close()
