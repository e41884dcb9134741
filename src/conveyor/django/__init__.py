"""Django: a backend for Django's task framework (``django.tasks`` in Django 6, the
``django-tasks`` backport on 5.2), and ``manage.py conveyor_worker``.

    INSTALLED_APPS = [..., "conveyor.django"]            # for the management command
    TASKS = {
        "default": {
            "BACKEND": "conveyor.django.ConveyorBackend",
            "QUEUES": ["default"],
            "OPTIONS": {"URL": "redis://localhost:6379/0", "NAMESPACE": "mysite"},
        }
    }

Install with ``pip install conveyor-queue[django]``. See backend.py for the options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import ConveyorBackend

__all__ = ["ConveyorBackend"]


def __getattr__(name: str) -> Any:
    # Imported on first use, not when Django imports the app package for INSTALLED_APPS.
    if name == "ConveyorBackend":
        from .backend import ConveyorBackend

        return ConveyorBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
