"""The ``workflow`` field of a job's entry: where the job stands in its workflow and what
follows it, carried by the job itself (JSON, like every field).

A chain step carries the steps after it; a chord member carries where to report its result;
a chord's callback carries how many results to read. So a worker needs nothing but the entry
to hand off, whichever app defined the workflow, and a dead-lettered step replayed as it was
resumes its chain.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from ..errors import PayloadError
from ..keys import delayed_job_id

FIELD: Final = "workflow"
FIELD_BYTES: Final = FIELD.encode()

#: What a chord does when a member fails for good: ``fail`` leaves the callback unrun and
#: records it dead, naming the member; ``include`` calls it with an error object in the
#: member's place.
OnError = Literal["fail", "include"]


class Step(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A job to add later: the task, where it goes, its own arguments (the previous result
    goes first), the option fields of its task (``expires``) and its deterministic id."""

    task: str
    queue: str
    level: str
    id: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    extra: dict[str, str | int] = {}


class Member(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A chord member: its slot, and the chord's callback (queue, level, job id)."""

    index: int
    size: int
    queue: str
    level: str
    callback: str
    on_error: OnError = "fail"


class Flow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A job's place in its workflow. ``step`` counts from 0 (a chord's members are step 0,
    its callback step 1); ``gather`` is set on a chord's callback: the number of results it
    reads, first argument, from the chord's hash."""

    id: str
    step: int = 0
    steps: int = 1
    next: list[Step] = []
    member: Member | None = None
    gather: int = 0

    def describe(self, task: str) -> str:
        """A line for dead letters and logs: which workflow, which step."""
        if self.member is not None:
            return f"chord {self.id} member {self.member.index + 1} of {self.member.size} ({task})"
        kind = "chord" if self.gather else "chain"
        return f"{kind} {self.id} step {self.step + 1} of {self.steps} ({task})"


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Flow).decode


def encode(flow: Flow) -> str:
    return _encode(flow).decode()


def decode(raw: bytes) -> Flow:
    try:
        return _decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PayloadError(f"field {FIELD!r} is not a workflow description: {exc}") from exc


def step_id(queue: str, workflow_id: str, step: int) -> str:
    """The id of a chain's step ``step``: known before it exists, so a handle can wait on it
    and the queue it is forwarded to can tell a repeat."""
    return delayed_job_id(queue, f"{workflow_id}-s{step}")


def member_id(queue: str, workflow_id: str, index: int) -> str:
    return delayed_job_id(queue, f"{workflow_id}-m{index}")
