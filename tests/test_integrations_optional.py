"""The framework integrations stay optional: the core, the worker, the CLI and the pytest
plugin (loaded into every pytest run) import no web framework, and an integration whose
framework is missing says which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

FRAMEWORKS = ("fastapi", "starlette", "flask", "django", "django_tasks", "httpx")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_core_worker_cli_and_pytest_plugin_import_no_framework() -> None:
    proc = _python(
        f"""
        import sys
        import conveyor, conveyor.worker, conveyor.cli, conveyor.testing, conveyor.pytest_plugin
        import conveyor.django  # the package itself is lazy: INSTALLED_APPS imports it
        loaded = [m for m in {FRAMEWORKS!r} if m in sys.modules]
        assert not loaded, loaded
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_the_installed_package_requires_no_framework_and_offers_extras() -> None:
    requires = [r.replace("'", '"') for r in metadata.requires("conveyor-queue") or []]
    always = [r.lower() for r in requires if "extra ==" not in r]
    assert not [r for r in always if r.startswith(("fastapi", "starlette", "flask", "django"))]
    for extra, package in [("fastapi", "fastapi"), ("flask", "flask"), ("django", "django")]:
        assert any(
            r.lower().startswith(package) and f'extra == "{extra}"' in r for r in requires
        ), f"no [{extra}] extra pulling {package}"
    plugins = metadata.entry_points(group="pytest11")
    assert [ep.value for ep in plugins if ep.name == "conveyor"] == ["conveyor.pytest_plugin"]


def test_a_missing_framework_names_the_extra_to_install() -> None:
    # sys.modules[name] = None makes `import name` fail as if it were not installed; one
    # interpreter tries the three integrations, each with its framework hidden.
    proc = _python(
        """
        import importlib, sys
        cases = [
            ("conveyor.fastapi", ["fastapi"]),
            ("conveyor.flask", ["flask"]),
            ("conveyor.django.backend", ["django.tasks", "django_tasks"]),
        ]
        for module, hidden in cases:
            saved = {name: sys.modules.get(name) for name in hidden}
            sys.modules.update(dict.fromkeys(hidden))
            try:
                importlib.import_module(module)
            except ImportError as exc:
                print(module, "->", exc)
            else:
                print(module, "-> imported")
            finally:
                for name, value in saved.items():
                    if value is None:
                        sys.modules.pop(name, None)
                    else:
                        sys.modules[name] = value
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    for line, extra in zip(lines, ("fastapi", "flask", "django"), strict=True):
        assert f"pip install 'conveyor-queue[{extra}]'" in line, line
