"""The pytest plugin as a user runs it: pytester starts pytest in a subprocess, where the
plugin is loaded from its ``pytest11`` entry point, on a user's project with a real Redis."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

TASKS = """
    import time
    from conveyor import Conveyor

    app = Conveyor(namespace="userproject")
    ran = []

    @app.task
    def add(a: int, b: int) -> int:
        ran.append((a, b))
        return a + b

    @app.task(retries=2, backoff=0.05)
    def flaky(key: str) -> str:
        ran.append(key)
        if ran.count(key) < 3:
            raise RuntimeError("not yet")
        return "ok"

    @app.task
    def fan_out(n: int) -> None:
        for i in range(n):
            add.enqueue(i, i)
"""


@pytest.fixture
def project(pytester: pytest.Pytester, redis_url: str) -> pytest.Pytester:
    pytester.makepyfile(userproject_tasks=textwrap.dedent(TASKS))
    pytester.makeini(
        f"""
        [pytest]
        conveyor_app = userproject_tasks:app
        addopts = --conveyor-url {redis_url} -p no:cacheprovider
        """
    )
    pytester.syspathinsert()
    return pytester


def test_fixtures_run_jobs_through_a_real_worker_in_a_namespace_of_their_own(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_user="""
        import redis
        from userproject_tasks import add, app, fan_out, flaky, ran

        def test_add(conveyor_app, conveyor_worker):
            assert conveyor_app is app
            assert conveyor_app.namespace.startswith("test-")
            job = add.enqueue(2, 3)
            assert job.result(timeout=10) == 5

        def test_burst_runs_retries_delayed_and_children(conveyor_app, conveyor_worker):
            ran.clear()
            flaky.enqueue("k")
            add.enqueue_in(0.3, 1, 1)
            fan_out.enqueue(5)
            conveyor_worker.run_until_empty(timeout=20)
            assert ran.count("k") == 3
            assert sorted(x for x in ran if isinstance(x, tuple)) == [
                (0, 0), (1, 1), (1, 1), (2, 2), (3, 3), (4, 4)
            ]

        def test_namespace_is_cleaned(conveyor_app, request):
            ns = conveyor_app.namespace
            add.enqueue(1, 2)
            client = redis.Redis.from_url(conveyor_app.url)
            assert client.keys(ns + ":*")
            request.config.stash_ns = (ns, conveyor_app.url)

        def test_after(request):
            ns, url = request.config.stash_ns
            assert redis.Redis.from_url(url).keys(ns + ":*") == []
            assert app.namespace == "userproject"
        """
    )
    result = project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=4)


def test_run_until_empty_names_what_is_left_at_its_timeout(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_left="""
        import pytest
        from userproject_tasks import add

        def test_far_delayed_job(conveyor_worker):
            add.enqueue_in(3600, 1, 2)
            with pytest.raises(TimeoutError, match="1 delayed"):
                conveyor_worker.run_until_empty(timeout=0.5)
        """
    )
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_unreachable_redis_fails_the_test_loudly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_down="""
        def test_needs_redis(conveyor_app):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--conveyor-url", "redis://127.0.0.1:1/0")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*Conveyor's fixtures need a Redis*--conveyor-url*"])


def test_unreachable_redis_leaves_the_users_app_bound_as_before(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        downproject_tasks="""
        from conveyor import Conveyor

        app = Conveyor("redis://127.0.0.1:6379/0", namespace="myapp")
        """,
        test_down="""
        import downproject_tasks

        def test_needs_redis(conveyor_app):
            pass

        def test_after():
            app = downproject_tasks.app
            assert (app.namespace, app.url) == ("myapp", "redis://127.0.0.1:6379/0")
        """,
    )
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess(
        "--conveyor-app", "downproject_tasks:app", "--conveyor-url", "redis://127.0.0.1:1/0"
    )
    result.assert_outcomes(passed=1, errors=1)
    # The message may be printed twice (the error, and its untruncated line in the short
    # summary when CI is set): what must hold is that each says how to start Redis once.
    lines = [line for line in result.stdout.lines if "fixtures need a Redis" in line]
    assert lines and all(line.count("Start one") == 1 for line in lines), lines
    assert "--conveyor-url" in lines[0]
