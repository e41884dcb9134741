"""Bar chart of throughput ratios against the floor, from a bench run's JSON (matplotlib).

Runs in bench/.peers-venv/conveyor (where run.py installs matplotlib), not the project venv:

    bench/.peers-venv/conveyor/bin/python bench/chart.py bench/results/latest.json out.png
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import _value, floor_value, order

SERIES = ["enqueue_single", "enqueue_bulk", "drain_1", "drain_2", "io_rate"]
TITLES = {
    "enqueue_single": "enqueue one at a time",
    "enqueue_bulk": "enqueue bulk",
    "drain_1": "drain, 1 process",
    "drain_2": "drain, 2 processes",
    "io_rate": "50 ms I/O, 100 slots",
}


def ratios(summary: dict, name: str, series: str) -> float | None:
    if series == "enqueue_single":
        # each library's own single-enqueue path (sync, else async) against the same kind of floor
        for metric in ("enqueue_sync", "enqueue_async"):
            v = _value(summary, name, metric)
            f = floor_value(summary, metric)
            if v is not None and f:
                return v / f
        return None
    v = _value(summary, name, series)
    f = floor_value(summary, series)
    return v / f if v is not None and f else None


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    doc = json.loads(src.read_text())
    summary = doc["summary"]
    names = [n for n in order(summary) if n != "floor"]
    labels = [textwrap.fill(summary[n].get("label", n), 18) for n in names]
    fig, ax = plt.subplots(figsize=(max(9, 1.3 * len(names) + 2), 6), dpi=110)
    width = 0.8 / len(SERIES)
    colors = ["#6baed6", "#c6dbef", "#08519c", "#3182bd", "#fd8d3c"]
    for k, series in enumerate(SERIES):
        xs, ys = [], []
        for j, n in enumerate(names):
            r = ratios(summary, n, series)
            if r is not None and r > 0:
                xs.append(j - 0.4 + width * (k + 0.5))
                ys.append(r)
        ax.bar(
            xs, ys, width, label=TITLES[series], color=colors[k], edgecolor="#333", linewidth=0.4
        )
    ax.axhline(1.0, color="#444", linewidth=1, linestyle="--")
    ax.text(len(names) - 0.5, 1.05, "floor = 1", ha="right", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("throughput / floor (plain redis-py, results stored)")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(labels, fontsize=8)
    for j, n in enumerate(names):
        if n == "conveyor":
            ax.get_xticklabels()[j].set_fontweight("bold")
    m = doc["machine"]
    reps = doc["config"]["reps"]
    runs = f"medians of {reps} runs" if reps > 1 else "1 run"
    ax.set_title(
        f"Throughput relative to the floor ({doc['mode']} run, {runs}; "
        f"{m.get('cores')} cores, {m.get('cpu', '?')}, Redis {m.get('redis_version', '?')})",
        fontsize=10,
    )
    ax.legend(fontsize=8, ncol=len(SERIES), loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main()
