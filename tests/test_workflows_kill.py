"""A small version of the workflow SIGKILL run (the full one: ``make workflows-chaos``)."""

from __future__ import annotations

from tests.workflows_kill import run


def test_chains_and_chords_survive_sigkilled_workers_with_no_duplicate_handoff() -> None:
    report = run(
        chains=200,
        chords=4,
        members=25,
        kill_every=(1.0, 1.5),
        max_kills=2,
        lease=1.0,
        timeout=60.0,
        log=lambda _: None,
    )
    assert not report.problems, "\n".join(report.problems[:20])
    assert report.kills == 2
    assert report.entries == 200 * 4 + 4 * 26
