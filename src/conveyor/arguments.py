"""A task function's parameters as a job sees them: binding a job's JSON arguments to them,
converting each to its annotated type, and the types a result or an argument converts to."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, get_type_hints

import msgspec

from .errors import PayloadError

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class Arguments:
    """Worked out once per task, lazily: a worker binds every job it runs through this."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.name = name
        self.signature = inspect.signature(fn)
        self._arg_types: dict[str, Any] | None = None
        self._all_hints: dict[str, Any] | None = None
        self._plan: list[tuple[str, Any]] | None = None
        self._by_position: frozenset[str] | None = None
        self._n_required: int | None = None

    def bind(self, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Check arguments against the signature and convert JSON values to annotated types.

        A job with the wrong arguments is dead-lettered on its first delivery, with this
        error as the reason, instead of failing inside the function again and again.
        """
        plan = self._positional_plan()
        if plan is not None and not kwargs and len(args) == len(plan):
            # The common case on the hot path: every parameter given by position.
            out = list(args)
            for i, (name, hint) in enumerate(plan):
                if hint is not None and type(out[i]) is not hint:
                    out[i] = self._convert(name, out[i], hint)
            return out, {}
        if plan and self._required() <= len(args) + len(kwargs) <= len(plan):
            in_order = self._bind_in_order(plan, args, kwargs)
            if in_order is not None:
                return in_order, {}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise PayloadError(
                f"arguments do not match {self.name}{self.signature}: {exc}"
            ) from exc
        types = self.types()
        for name, value in list(bound.arguments.items()):
            hint = types.get(name)
            if hint is None:
                continue
            param = self.signature.parameters[name]
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                hint = tuple[hint, ...]  # type: ignore[valid-type]
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                hint = dict[str, hint]  # type: ignore[valid-type]
            bound.arguments[name] = self._convert(name, value, hint)
        return list(bound.args), dict(bound.kwargs)

    def _bind_in_order(
        self, plan: list[tuple[str, Any]], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> list[Any] | None:
        """The parameters given in order, the first by position and the next ones by name,
        those left out having defaults: all as positional arguments, as ``Signature.bind``
        gives them, without its cost (6 us a job, 12% of a worker's CPU with a 2 KiB keyword
        argument). None when they do not fit that shape (the general path says why)."""
        out = list(args)
        for name, _ in plan[len(args) : len(args) + len(kwargs)]:
            if name not in kwargs or name in self._positional_only():
                return None
            out.append(kwargs[name])
        for i, value in enumerate(out):
            name, hint = plan[i]
            if hint is not None and type(value) is not hint:
                out[i] = self._convert(name, value, hint)
        return out

    def _required(self) -> int:
        """How many parameters have no default (they come first in a positional plan)."""
        if self._n_required is None:
            self._n_required = sum(
                1
                for p in self.signature.parameters.values()
                if p.default is inspect.Parameter.empty
            )
        return self._n_required

    def _positional_only(self) -> frozenset[str]:
        if self._by_position is None:
            self._by_position = frozenset(
                p.name
                for p in self.signature.parameters.values()
                if p.kind is inspect.Parameter.POSITIONAL_ONLY
            )
        return self._by_position

    def _convert(self, name: str, value: Any, hint: Any) -> Any:
        try:
            return msgspec.convert(value, hint, strict=False)
        except (msgspec.ValidationError, TypeError) as exc:
            raise PayloadError(f"argument {name!r} of {self.name}: {exc}") from exc

    def _positional_plan(self) -> list[tuple[str, Any]] | None:
        """(name, type hint) of each parameter, when all can be passed by position."""
        if self._plan is None:
            positional = (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
            )
            params = list(self.signature.parameters.values())
            types = self.types()
            self._plan = (
                [(p.name, types.get(p.name)) for p in params]
                if all(p.kind in positional for p in params)
                else []
            )
        return self._plan if self._plan or not self.signature.parameters else None

    def hints(self) -> dict[str, Any]:
        if self._all_hints is None:
            try:
                self._all_hints = get_type_hints(self.fn)
            except Exception:  # an annotation not resolvable here: no conversion
                self._all_hints = {}
        return self._all_hints

    def types(self) -> dict[str, Any]:
        if self._arg_types is None:
            hints = dict(self.hints())
            hints.pop("return", None)
            self._arg_types = {k: v for k, v in hints.items() if v is not Any}
        return self._arg_types

    def convert_result(self, value: Any) -> Any:
        """The JSON result as the task's declared return type, when that can be built."""
        hint = self.hints().get("return")
        if hint is None or hint is Any:
            return value
        try:
            return msgspec.convert(value, hint, strict=False)
        except (msgspec.ValidationError, TypeError):
            return value

    @property
    def result_type(self) -> Any:
        """The declared return type (None when absent or Any): how a result JSON cannot carry
        exactly is converted back; pass it to ``wire.encode_record``."""
        hint = self.hints().get("return")
        return None if hint is Any or hint is type(None) else hint

    def hint_for(self, key: int | str) -> tuple[str, Any]:
        """The name and annotated type of the argument at a position or keyword: what the
        wire format uses to accept a value JSON would change (``data: bytes``)."""
        params = list(self.signature.parameters.values())
        types = self.types()
        if isinstance(key, int):
            positional = [p for p in params if p.kind in _POSITIONAL]
            if key < len(positional):
                return repr(positional[key].name), types.get(positional[key].name)
            star = next((p for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
            if star is not None:
                return f"*{star.name}[{key - len(positional)}]", types.get(star.name)
            return f"#{key + 1}", None
        param = self.signature.parameters.get(key)
        if param is not None and param.kind is not inspect.Parameter.POSITIONAL_ONLY:
            return repr(key), types.get(key)
        stars = next((p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        return repr(key), types.get(stars.name) if stars is not None else None
