"""The gate a worker calls for each delivery of a task with a rate or concurrency limit.

One script (limit_gate.lua) decides both limits at once: the job runs now, or it is parked
in the delayed set without counting an attempt. Tasks without limits never call it, so the
hot path of an unlimited task pays nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..broker.calls import Arg, Call, run_script
from ..broker.operations import Delivery
from ..keys import GROUP, QueueKeys
from ..wire import JobRecord, encode_record
from .admission import Admission, parse_admission
from .concurrency import ConcurrencyLimit, leases_key, waiters_key
from .rate import RateLimit, rate_key

#: The record of a job a cancel marked before its gate (conveyor.cancellation builds the same;
#: importing it here would be circular).
_CANCELLED = encode_record(JobRecord(state="cancelled", reason="cancelled while queued"))


@dataclass(frozen=True)
class Limits:
    """A task's limits, built once when the task is declared (``Limits.of``)."""

    rate: RateLimit | None = None
    concurrency: ConcurrencyLimit | None = None

    @classmethod
    def of(
        cls, *, rate: object = None, rate_burst: object = 1, concurrency: object = None
    ) -> Limits | None:
        """Validated limits from task options, or None for a task with neither (no gate).

        Raises ConfigurationError naming the option (``rate``, ``rate_burst``,
        ``concurrency``).
        """
        parsed_rate = RateLimit.parse(rate, rate_burst) if rate is not None else None
        parsed_conc = ConcurrencyLimit.parse(concurrency) if concurrency is not None else None
        if parsed_rate is None and parsed_conc is None:
            return None
        return cls(parsed_rate, parsed_conc)

    def gate(
        self,
        keys: QueueKeys,
        consumer: str,
        d: Delivery,
        job_id: str,
        payload: bytes,
        record: bytes,
        *,
        task: str,
        lease_ms: int,
        rate_key_value: object = None,
        concurrency_key_value: object = None,
        ttl_ms: int = 86_400_000,
        unique_name: str = "",
        publish: str = "PUBLISH",
    ) -> Call[Admission]:
        """The gate for one delivery this consumer holds.

        ``payload`` and ``record`` are what retry.lua takes for a bounce: the job's fields
        with the same attempt (``delayed_payload(envelope_fields(env, id=job_id), level)``)
        and a ``scheduled`` record. ``lease_ms`` is the worker's lease timeout (used only
        with a concurrency limit). The key values are what the task's ``rate_key`` /
        ``concurrency_key`` computed for this job, or None for one limiter per task.
        """
        keys_list = [keys.stream(d.level), keys.delayed, keys.payloads, keys.record(job_id)]
        rate_args: tuple[Arg, ...] = ("", "", "")
        conc_args: tuple[Arg, ...] = ("", "", "")
        mode = ""
        if self.rate is not None:
            mode += "r"
            keys_list.append(rate_key(keys, task, rate_key_value))
            rate_args = (repr(self.rate.rate.interval_ms), self.rate.burst, self.rate.keep_ms)
        if self.concurrency is not None:
            mode += "c"
            keys_list.append(leases_key(keys, task, concurrency_key_value))
            keys_list.append(waiters_key(keys, task, concurrency_key_value))
            conc_args = (self.concurrency.limit, lease_ms, self.concurrency.retry_ms)
        keys_list.append(keys.cancelled)
        if unique_name:
            keys_list.append(keys.unique(unique_name))
        args = (
            GROUP,
            consumer,
            d.entry_id,
            job_id,
            payload,
            record,
            mode,
            *rate_args,
            *conc_args,
            _CANCELLED,
            ttl_ms,
            keys.done_channel,
            publish,
        )
        return run_script("limit_gate", keys_list, args, parse_admission)
