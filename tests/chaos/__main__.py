"""``python -m tests.chaos``: run chaos scenarios and print the checker's table.

Exits non-zero when any scenario fails or any negative control is not detected.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from .checker import Result, table
from .scenarios import SCENARIOS, SMOKE, Options


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument(
        "scenarios", nargs="*", help=f"scenario keys (default: all): {', '.join(SCENARIOS)}"
    )
    p.add_argument("--smoke", action="store_true", help="the 1,000-job smoke subset")
    p.add_argument("--jobs", type=int, help="override the number of jobs of every scenario")
    p.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "0")) or None)
    p.add_argument("--keep", action="store_true", help="keep every scenario's files")
    p.add_argument("--dir", help="where scenario files go (default: a temp dir)")
    args = p.parse_args(argv)
    keys = args.scenarios or (SMOKE if args.smoke else list(SCENARIOS))
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 30)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="conveyor-chaos-"))
    base.mkdir(parents=True, exist_ok=True)
    options = Options(seed=seed, base=base, keep=args.keep, full=not args.smoke)
    results: list[Result] = []
    t0 = time.monotonic()
    for key in keys:
        try:
            results.append(SCENARIOS[key].run(options, args.jobs))
        except Exception as exc:  # the scenario's result already says harness error
            r = Result(key, SCENARIOS[key].title, control=SCENARIOS[key].control)
            r.fail(f"harness error: {type(exc).__name__}: {exc}")
            results.append(r)
    print()
    print(table(results))
    print()
    for r in results:
        print(r.report())
    bad = [r.key for r in results if not r.as_expected]
    print(
        f"\nseed {seed}; {len(results)} scenario(s) in {time.monotonic() - t0:.0f}s; "
        + (f"NOT AS EXPECTED: {', '.join(bad)}" if bad else "all as expected")
    )
    print(f"files: {base}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
