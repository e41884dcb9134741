"""Django tasks (`@task` from Django's task framework), run by `manage.py conveyor_worker`."""

import asyncio

try:  # Django 6
    from django.tasks import task
except ImportError:  # Django 5.2 + the django-tasks backport
    from django_tasks import task

from .models import Note


@task()
def summarize_note(note_id: int) -> str:
    """Reads a row the web process committed, writes the summary back."""
    note = Note.objects.get(pk=note_id)
    note.summary = note.text[:40]
    note.words = len(note.text.split())
    note.save()
    return note.summary


@task(queue_name="reports", priority=10)
def word_count(text: str) -> int:
    return len(text.split())


@task()
def explode(reason: str) -> None:
    raise ValueError(reason)


@task(takes_context=True)
def which_attempt(context, label: str) -> dict:
    return {"label": label, "attempt": context.attempt, "id": context.task_result.id}


@task()
async def shout(text: str) -> str:
    await asyncio.sleep(0)
    return text.upper()
