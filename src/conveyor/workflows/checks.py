"""Build-time checks of a workflow: each step must accept what the step before it returns.

Only what the annotations prove is refused: a step whose parameters cannot take the previous
result plus its own arguments, or whose first parameter's type can never hold the previous
step's declared return type (``-> int`` into ``text: str``). Unions, generics' items,
TypeVars and missing annotations pass: the worker converts and checks at run time.

A step is seen as one job sees it: a batch task (``batch_size``) takes one item and returns
one result per job (``list[str] -> list[V]`` is ``str -> V``), and a generator task's result
is what it returns, not what it yields (``Generator[str, None, T]`` is ``T``; an async
generator returns None).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Generator, Sequence
from typing import Any, Union, get_args, get_origin

from ..errors import ConfigurationError
from ..task import Signature

#: A value of the key type is accepted where the value type is annotated (JSON numbers; a
#: tuple and a list are both a JSON array).
WIDENING: dict[type, tuple[type, ...]] = {
    int: (float, complex),
    float: (complex,),
    bool: (int, float),
    tuple: (list,),
    list: (tuple,),
}


def _plain(hint: Any) -> type | None:
    """The class a hint names, or None when it is not one plain class (Any, Union, TypeVar)."""
    if hint is None or hint is Any or isinstance(hint, str):
        return None
    if hint is type(None):
        return type(None)
    origin = get_origin(hint)
    if origin is not None:
        return origin if isinstance(origin, type) else None
    return hint if isinstance(hint, type) else None


def accepts(param: Any, produced: Any) -> bool:
    """False only when a value of type ``produced`` can never be taken as ``param``."""
    origin = get_origin(param)
    if origin is Union or isinstance(param, types.UnionType):
        return any(accepts(p, produced) for p in get_args(param))
    produced_origin = get_origin(produced)
    if produced_origin is Union or isinstance(produced, types.UnionType):
        return any(accepts(param, p) for p in get_args(produced))
    want, got = _plain(param), _plain(produced)
    if want is None or got is None or want is object:
        return True
    return issubclass(got, want) or want in WIDENING.get(got, ())


def first_param(sig: Signature) -> tuple[str, Any] | None:
    """The name and annotation of the parameter the previous result goes to."""
    params = list(sig.task.signature.parameters.values())
    if not params:
        return None
    p = params[0]
    if p.kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        return None
    hint = sig.task.arguments.types().get(p.name)
    if _batched(sig):
        hint = _item(hint)
    return p.name, hint


def returns(sig: Signature) -> Any:
    """The declared return type of one job of a step (None when not declared)."""
    fn = sig.task.fn
    if inspect.isasyncgenfunction(fn):
        return type(None)  # an async generator has no return value: the job's result is None
    hint = sig.task.arguments.hints().get("return", None)
    if inspect.isgeneratorfunction(fn):
        # Generator[Y, S, R] returns R; Iterator[Y] or Iterable[Y] say nothing about it.
        args = get_args(hint)
        hint = args[2] if get_origin(hint) is Generator and len(args) == 3 else None
    elif _batched(sig):
        hint = _item(hint)
    return None if hint is Any else hint


def _per_job(sig: Signature) -> str:
    return " (one item of its batch)" if _batched(sig) else ""


def _batched(sig: Signature) -> bool:
    return sig.task.options.batch_size is not None


def _item(hint: Any) -> Any:
    """The item type of a batch task's list (``list[str]`` -> str), None when not given."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (list, Sequence) and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def check_binds(sig: Signature, *, takes_previous: bool, where: str) -> None:
    """The step's parameters take its arguments (after the previous result, if any)."""
    lead: tuple[Any, ...] = (None,) if takes_previous else ()
    try:
        sig.task.signature.bind(*lead, *sig.args, **sig.kwargs)
    except TypeError as exc:
        extra = " and the previous step's result first" if takes_previous else ""
        raise ConfigurationError(
            f"{where}: {sig.task.name}{sig.task.signature} cannot take its arguments{extra}: {exc}"
        ) from exc


def check_link(before: Signature, after: Signature, where: str) -> None:
    """``after`` accepts the result of ``before`` as its first argument."""
    check_binds(after, takes_previous=True, where=where)
    produced = returns(before)
    first = first_param(after)
    if produced is None or first is None or first[1] is None:
        return
    if not accepts(first[1], produced):
        raise ConfigurationError(
            f"{where}: {after.task.name} takes {first[0]}: {_name(first[1])}{_per_job(after)} "
            f"first, but "
            f"{before.task.name} returns {_name(produced)}; each step's result is the next "
            "step's first argument"
        )


def check_gather(members: list[Signature], callback: Signature, where: str) -> None:
    """A chord's callback takes the list of member results as its first argument."""
    check_binds(callback, takes_previous=True, where=where)
    first = first_param(callback)
    if first is None or first[1] is None:
        return
    name, hint = first
    if not accepts(hint, list):
        raise ConfigurationError(
            f"{where}: {callback.task.name} takes {name}: {_name(hint)} first, but a chord's "
            "callback receives the list of its members' results"
        )
    items = get_args(hint)
    if get_origin(hint) in (list, tuple) and items:
        for m in members:
            produced = returns(m)
            if produced is not None and not accepts(items[0], produced):
                raise ConfigurationError(
                    f"{where}: {callback.task.name} takes {name}: {_name(hint)}, but member "
                    f"{m.task.name} returns {_name(produced)}"
                )


def _name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) and not get_args(hint) else repr(hint)
