"""The app layer imports one way: app -> task/cron -> job -> broker, keys, wire.

app.py, task.py, job.py and cron.py imported each other in a circle (partly under
TYPE_CHECKING), so no module of the four could be read, or tested, without the others.
Every import is counted here, TYPE_CHECKING ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import conveyor

PACKAGE = Path(conveyor.__file__).parent
LAYER = ("app", "task", "job", "cron")


def imported_modules(name: str) -> set[str]:
    """The sibling modules of LAYER that ``conveyor.<name>`` imports, anywhere in the file."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module in LAYER:
                found.add(node.module)
            elif node.module is None:
                found |= {alias.name for alias in node.names if alias.name in LAYER}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("conveyor."):
            module = (node.module or "").split(".", 1)[1]
            if module in LAYER:
                found.add(module)
    return found


def test_app_task_job_and_cron_import_each_other_one_way() -> None:
    graph = {name: imported_modules(name) for name in LAYER}
    assert "app" not in set().union(*(graph[n] for n in ("task", "job", "cron")))
    assert graph["job"] == set(), "job.py depends on the broker and keys only"
    assert "cron" not in graph["task"] and "task" not in graph["job"]
    seen: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        seen.append(name)
        for nxt in graph[name]:
            visit(nxt, (*path, name))

    for name in LAYER:
        visit(name, ())
