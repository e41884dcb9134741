"""The task framework's names, from Django itself (6.0+) or from the django-tasks backport."""

from __future__ import annotations

try:  # Django 6.0+
    from django.tasks import TaskContext, TaskResult, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskError, TaskResultStatus
    from django.tasks.exceptions import (
        InvalidTask,
        InvalidTaskBackend,
        TaskResultDoesNotExist,
        TaskResultMismatch,
    )
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:  # Django 5.2 with `pip install django-tasks`
    try:
        from django_tasks import TaskContext, TaskResultStatus, task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskError, TaskResult
        from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
        from django_tasks.signals import task_enqueued, task_finished, task_started
    except ImportError as exc:  # the extra is optional: say how to get it
        raise ImportError(
            "conveyor.django needs Django's task framework: Django 6, or Django 5.2 with the "
            "backport (pip install 'conveyor-queue[django]' installs both on Python < 3.12)"
        ) from exc

__all__ = [
    "BaseTaskBackend",
    "InvalidTask",
    "InvalidTaskBackend",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
