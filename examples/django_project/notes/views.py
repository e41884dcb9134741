"""The seed's pattern in Django: POST saves a note and queues its summary, answering at once
with the task result id; GET reports the state and the return value."""

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Note
from .tasks import summarize_note


@csrf_exempt
@require_POST
def create_note(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        note = Note.objects.create(text=json.loads(request.body)["text"])
    # Enqueued after the commit (the block above ended), so the worker finds the row. Inside
    # a transaction (ATOMIC_REQUESTS), use
    # transaction.on_commit(partial(summarize_note.enqueue, note.pk)) instead.
    result = summarize_note.enqueue(note.pk)
    return JsonResponse({"note": note.pk, "task": result.id, "status": result.status}, status=202)


@require_GET
def task_status(request: HttpRequest, result_id: str) -> JsonResponse:
    result = summarize_note.get_result(result_id)
    body = {"task": result.id, "status": result.status}
    if result.is_finished and not result.errors:
        body["return_value"] = result.return_value
    return JsonResponse(body)
