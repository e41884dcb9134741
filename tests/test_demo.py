"""`make demo`, the first command a newcomer runs: a real worker process (2 processes) runs
the four-stage document pipeline as chains on the test's Redis, and cleans up after itself."""

from __future__ import annotations

import os
import subprocess
import sys

import redis


def test_the_demo_runs_every_pipeline_and_dead_letters_the_poison_document(
    redis_url: str, r: redis.Redis
) -> None:
    env = dict(os.environ, CONVEYOR_REDIS_URL=redis_url, COLUMNS="120")
    p = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "12 documents through 4 stages, 1 dead-lettered as expected" in p.stdout
    # the poison document's dead letter names its chain and step, and says how to resume it
    assert "step 2 of 4 (analyze)" in p.stdout
    assert "conveyor dead replay" in p.stdout
    assert not list(r.scan_iter(match="conveyor-demo-*", count=1000))
