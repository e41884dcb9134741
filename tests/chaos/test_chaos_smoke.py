"""The chaos smoke subset (issue 3): scenarios 1, 3a, 6 and 8 at 1,000 jobs, plus negative
controls that must be caught by the checker.

Each test starts its own redis-server on a free loopback port and its own worker processes
(``python -m tests.chaos.worker``), and kills only those, by pid. ``CHAOS_SEED`` fixes the
random choices; the seed and the checker's report are in every failure message, and a failing
scenario keeps its directory (ledgers, worker logs, Redis log) for a post-mortem.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.chaos.checker import Result
from tests.chaos.scenarios import SCENARIOS, Options

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> Options:
    seed = int(os.environ.get("CHAOS_SEED", "0")) or random.randrange(1, 1 << 30)
    base: Path = tmp_path_factory.mktemp("chaos")
    return Options(seed=seed, base=base)


def run(key: str, options: Options) -> Result:
    result = SCENARIOS[key].run(options)
    print(result.report())
    return result


def assert_passes(result: Result) -> None:
    assert result.passed, f"chaos scenario failed:\n{result.report()}"
    assert result.acknowledged > 0 and result.lost == 0 and result.residual == 0


def assert_detected(result: Result) -> None:
    assert not result.passed and result.lost > 0, (
        f"negative control NOT detected: the checker must see its lost jobs\n{result.report()}"
    )


def test_sigkill_of_random_workers_loses_no_job(options: Options) -> None:
    assert_passes(run("1", options))


def test_redis_kill9_with_aof_always_loses_no_acknowledged_job(options: Options) -> None:
    assert_passes(run("3a", options))


def test_poison_jobs_end_dead_as_specified_while_good_jobs_complete(options: Options) -> None:
    assert_passes(run("6", options))


def test_conveyor_retention_under_backlog_loses_no_job(options: Options) -> None:
    assert_passes(run("8", options))


def test_checker_detects_jobs_lost_to_plain_xadd_maxlen(options: Options) -> None:
    assert_detected(run("C-maxlen", options))


def test_checker_detects_jobs_lost_to_noack_reads(options: Options) -> None:
    assert_detected(run("C-noack", options))


def test_checker_detects_jobs_lost_to_rdb_only_redis_kill(options: Options) -> None:
    assert_detected(run("C-rdb", options))
