"""Key names (conveyor.keys): every key of a queue carries the `{queue}` hash tag, names
cannot inject braces, globs or separators, and job ids round trip to where a job lives."""

from __future__ import annotations

import pytest
import redis

from conveyor import ConfigurationError, Conveyor
from conveyor.keys import (
    LEVELS,
    JobLocation,
    QueueKeys,
    delayed_job_id,
    job_id_for,
    parse_job_id,
    validate_name,
)


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes (the rules of CLUSTER KEYSLOT)."""
    start = key.find("{")
    if start == -1:
        return key
    end = key.find("}", start + 1)
    if end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


def all_keys(k: QueueKeys) -> list[str]:
    return [
        *(k.stream(level) for level in LEVELS),
        *k.streams,
        k.delayed,
        k.payloads,
        k.dead,
        k.done_channel,
        k.record("orders:n:1700000000000-0"),
        k.record("orders:d:0123abcd"),
        k.unique("user-42"),
    ]


def test_every_queue_key_carries_the_queue_hash_tag() -> None:
    k = QueueKeys("myapp", "orders")
    for key in all_keys(k):
        assert key.startswith("myapp:{orders}:"), key
        assert hash_tag(key) == "orders", key
        assert key.count("{") == 1 and key.count("}") == 1, key


def test_keys_of_different_queues_do_not_collide() -> None:
    a, b = QueueKeys("ns", "a"), QueueKeys("ns", "b")
    assert not set(all_keys(a)) & set(all_keys(b))
    other_ns = QueueKeys("ns2", "a")
    assert not set(all_keys(a)) & set(all_keys(other_ns))


def test_streams_are_ordered_most_urgent_first() -> None:
    k = QueueKeys("ns", "q")
    assert k.streams == ("ns:{q}:ready:high", "ns:{q}:ready:normal", "ns:{q}:ready:low")
    assert k.delayed == "ns:{q}:delayed"
    assert k.payloads == "ns:{q}:payloads"
    assert k.dead == "ns:{q}:dead"
    assert k.done_channel == "ns:{q}:done"
    assert k.record("q:n:1-0") == "ns:{q}:job:q:n:1-0"


def test_app_keys_match_the_documented_layout(app: Conveyor, namespace: str) -> None:
    k = app.keys("default")
    assert k.stream("normal") == f"{namespace}:{{default}}:ready:normal"
    assert app.keys("default") is k


def test_all_keys_of_a_queue_can_be_touched_by_one_script(r: redis.Redis) -> None:
    # On a standalone server this only proves the keys are legal script keys; the hash tag
    # check above is what makes the same script legal on Redis Cluster.
    k = QueueKeys("test-keys", "q")
    keys = all_keys(k)
    n = r.eval("return #KEYS", len(keys), *keys)
    assert n == len(keys)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("a{b", id="open-brace"),
        pytest.param("a}b", id="close-brace"),
        pytest.param("{q}", id="braces"),
        pytest.param("a*", id="star"),
        pytest.param("a?", id="question"),
        pytest.param("a[b]", id="brackets"),
        pytest.param("a:b", id="colon"),
        pytest.param("a b", id="space"),
        pytest.param(" a", id="leading-space"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a/b", id="slash"),
        pytest.param("é", id="non-ascii"),
        pytest.param("x" * 65, id="65-chars"),
        pytest.param("x" * 1000, id="1000-chars"),
    ],
)
def test_validate_name_rejects_unsafe_names(name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_name("queue", name)
    assert "queue" in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("abc\n", id="trailing-newline"),
        pytest.param("\nabc", id="leading-newline"),
        pytest.param("a\nb", id="inner-newline"),
    ],
)
def test_validate_name_rejects_newlines(name: str) -> None:
    # A newline is a separator in logs, in the done channel's message and in ACL files.
    with pytest.raises(ConfigurationError):
        validate_name("queue", name)


@pytest.mark.parametrize("name", ["a", "default", "orders.v2", "my-queue_1", "X" * 64, "0"])
def test_validate_name_accepts_safe_names(name: str) -> None:
    assert validate_name("queue", name) == name


def test_bad_names_are_rejected_wherever_they_enter() -> None:
    with pytest.raises(ConfigurationError):
        QueueKeys("ns", "a:b")
    with pytest.raises(ConfigurationError):
        QueueKeys("n{s}", "q")
    with pytest.raises(ConfigurationError):
        Conveyor("redis://127.0.0.1:6379/0", namespace="bad ns")
    with pytest.raises(ConfigurationError):
        Conveyor("redis://127.0.0.1:6379/0", default_queue="q*")
    app = Conveyor("redis://127.0.0.1:6379/0", namespace="test-keys")
    with pytest.raises(ConfigurationError):

        @app.task(queue="{q}")
        def f() -> None: ...

    with pytest.raises(ConfigurationError):

        @app.task(name="bad:name")
        def g() -> None: ...

    @app.task
    def h() -> None: ...

    with pytest.raises(ConfigurationError):
        h.using(queue="a b")


# -- job ids -------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", LEVELS)
def test_job_id_round_trip(level: str) -> None:
    job_id = job_id_for("orders", level, "1700000000000-7")
    assert job_id == f"orders:{level[0]}:1700000000000-7"
    assert parse_job_id(job_id) == JobLocation("orders", level, "1700000000000-7")


def test_delayed_job_id_round_trip() -> None:
    job_id = delayed_job_id("orders", "0123456789abcdef0123456789abcdef")
    assert job_id == "orders:d:0123456789abcdef0123456789abcdef"
    assert parse_job_id(job_id) == JobLocation("orders", None, None)


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "orders",
        "orders:n",
        "orders:n:",
        "orders:d:",
        "orders:x:1700000000000-0",
        "orders:N:1700000000000-0",
        "orders:normal:1700000000000-0",
        "orders:n:1700000000000-0:extra",
        "{orders}:n:1700000000000-0",
        "bad queue:n:1700000000000-0",
        ":n:1700000000000-0",
        "o*:n:1-0",
    ],
)
def test_parse_job_id_rejects_garbage(job_id: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_job_id(job_id)
    assert "not a Conveyor job id" in str(info.value)


@pytest.mark.parametrize(
    "job_id",
    [
        "orders:n:garbage",
        "orders:h:1700000000000",
        "orders:l:1-x",
        "orders:n:-1-0",
        "orders:n:1-0-0",
    ],
)
def test_parse_job_id_rejects_entry_part_that_is_not_a_stream_id(job_id: str) -> None:
    # Such an id would reach XPENDING/XRANGE in the status script and fail there with a raw
    # Redis error ("Invalid stream ID") instead of a clear ConfigurationError.
    with pytest.raises(ConfigurationError):
        parse_job_id(job_id)


def test_app_job_rejects_garbage_id(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError):
        app.job("not-a-job-id")
    with pytest.raises(ConfigurationError):
        app.job("default:z:1-0")


@pytest.mark.parametrize(
    "job_id",
    [
        "default:n:99999999999999999999-0",
        "default:n:18446744073709551616-0",
        "default:h:0-18446744073709551616",
    ],
)
def test_parse_job_id_rejects_entry_ids_no_stream_can_hold(job_id: str) -> None:
    # Each half of an entry id is an unsigned 64-bit integer; a bigger one reached Redis as
    # "ERR Invalid stream ID" from the status script.
    with pytest.raises(ConfigurationError, match="not a Conveyor job id"):
        parse_job_id(job_id)


def test_parse_job_id_accepts_the_largest_entry_id() -> None:
    top = "18446744073709551615-18446744073709551615"
    assert parse_job_id(f"default:n:{top}") == JobLocation("default", "normal", top)


def test_parse_job_id_refuses_ids_longer_than_the_limit() -> None:
    token = "a" * 64
    assert parse_job_id(f"{'q' * 64}:d:{token}").queue == "q" * 64
    with pytest.raises(ConfigurationError, match="characters long"):
        parse_job_id("default:d:" + "a" * 100_000)


def test_status_of_a_job_id_beyond_64_bits_is_a_clear_error(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="not a Conveyor job id"):
        app.job("default:n:99999999999999999999-0").status()
