"""Find the user's app from a ``module:attribute`` string, with errors that say what to fix."""

from __future__ import annotations

import importlib
import os
import sys

from ..app import Conveyor
from ..errors import ConfigurationError


def load_app(spec: str) -> Conveyor:
    """Import ``package.module:app`` (attribute defaults to ``app``) from the current dir."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not module_name:
        raise ConfigurationError(f"expected MODULE:APP, like `myproject.tasks:app`, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigurationError(
                f"cannot import module {module_name!r} (from {spec!r}); run from the directory "
                f"that contains it or add it to PYTHONPATH (current dir: {cwd})"
            ) from exc
        raise
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(
            f"module {module_name!r} has no attribute {attr!r}; point at your Conveyor app, "
            f"like `{module_name}:app`"
        ) from None
    if not isinstance(app, Conveyor):
        raise ConfigurationError(f"{spec!r} is a {type(app).__name__}, not a Conveyor app")
    return app
