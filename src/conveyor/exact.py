"""Exactness: what a task function receives must equal what its caller passed.

JSON (msgspec) would turn nan into null, a set into a list, bytes into base64 text and an
int dict key into a string without a word. These checks refuse such values unless the
task's annotations say how to convert them back, and keep ordinary payloads cheap: a
top-level type scan, then one decode and a C-level comparison only when needed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgspec

from .errors import PayloadError

MAX_DEPTH: Final = 64

#: The name and annotated type of an argument at a position (int) or keyword (str):
#: ``(label, type or None)``. Task.hint_for is one.
HintFor = Callable[[int | str], tuple[str, Any]]

_json_decode = msgspec.json.Decoder().decode


def plain(values: Iterable[Any]) -> bool:
    """The cheap proof of exactness: only str, int, bool, None and finite floats at the top.
    Anything else (a container that may hold a set) gets check_exact."""
    for value in values:
        t = type(value)
        if t not in PLAIN_TYPES and (t is not float or value - value != 0.0):
            return False
    return True


def check_exact(
    args: list[Any],
    kwargs: dict[str, Any],
    args_json: bytes,
    kwargs_json: bytes,
    hints: HintFor | None,
) -> None:
    """Refuse arguments JSON would change silently, naming the first one.

    Cheap for ordinary payloads: one decode and one C-level comparison each. Only when they
    differ is each argument looked at: tuples are accepted (they arrive as lists, as JSON
    has it), and a value whose annotated type converts the JSON back to an equal value is
    accepted (``data: bytes``, ``tags: set[str]``).
    """
    decoded_args = _json_decode(args_json)
    if decoded_args != args:
        for i, (value, back) in enumerate(zip(args, decoded_args, strict=True)):
            _check_value(value, back, *(hints(i) if hints else (f"#{i + 1}", None)))
    decoded_kwargs = _json_decode(kwargs_json)
    if decoded_kwargs != kwargs:
        for name, value in kwargs.items():
            back = decoded_kwargs.get(name) if type(name) is str else _MISSING
            _check_value(value, back, *(hints(name) if hints else (repr(name), None)))


_MISSING: Final = object()


def check_result(value: Any, encoded: bytes, result_type: Any = None) -> None:
    """Refuse a task's result (``encoded``: its JSON) when JSON cannot carry it exactly and
    the return annotation (``result_type``) does not convert it back."""
    if type(value) not in _SCALARS or (type(value) is float and not math.isfinite(value)):
        if not depth_ok(encoded):
            raise PayloadError(f"task result is nested more than {MAX_DEPTH} levels deep")
        back = _json_decode(encoded)
        if back != value:
            _check_value(value, back, "result", result_type, what="task result")


_SCALARS: Final = frozenset({str, int, bool, type(None), float})
#: Types JSON carries exactly, whatever their value.
PLAIN_TYPES: Final = frozenset({str, int, bool, type(None)})


def _check_value(value: Any, back: Any, label: str, hint: Any, *, what: str = "argument") -> None:
    if back is not _MISSING and _same(value, back):
        return
    if hint is not None and back is not _MISSING:
        try:
            if msgspec.convert(back, hint, strict=False) == value:
                return
        except (msgspec.ValidationError, TypeError, ValueError):
            pass
    name = what if what != "argument" else f"argument {label}"
    raise PayloadError(
        f"{name} is {_describe(value)}, which JSON cannot carry exactly (it would arrive as "
        f"{_describe(back) if back is not _MISSING else 'something else'}); pass a JSON value "
        "(str, int, finite float, bool, None, list, dict with str keys), or annotate the "
        "type (e.g. `data: bytes`, `tags: set[str]`, `-> bytes`) so it is converted back"
    )


def _same(value: Any, back: Any) -> bool:
    """Equal after a JSON round trip, counting a tuple equal to the list it becomes."""
    if isinstance(value, tuple | list):
        return (
            type(back) is list
            and len(back) == len(value)
            and all(_same(v, b) for v, b in zip(value, back, strict=True))
        )
    if isinstance(value, dict):
        return (
            type(back) is dict
            and all(type(k) is str or isinstance(k, str) for k in value)
            and value.keys() == back.keys()
            and all(_same(v, back[k]) for k, v in value.items())
        )
    return bool(type(back) is not list and type(back) is not dict and value == back)


def _describe(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        odd = [k for k in value if not isinstance(k, str)]
        if odd:
            return f"a dict with a {type(odd[0]).__name__} key ({odd[0]!r})"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"')
_INNERMOST_PAIR: Final = re.compile(rb"[\[{][\]}]")
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")


def depth_ok(raw: bytes) -> bool:
    """True unless the JSON nests more than MAX_DEPTH arrays/objects.

    Free for ordinary payloads (few brackets); otherwise strings are cut out and each round
    removes every innermost bracket pair, so MAX_DEPTH rounds of C-speed scans decide.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return True
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    for _ in range(MAX_DEPTH):
        brackets = _INNERMOST_PAIR.sub(b"", brackets)
        if not brackets:
            return True
    return False


def check_depth_encoded(args_json: bytes, kwargs_json: bytes) -> None:
    # args is itself an array: its items may nest MAX_DEPTH - 1 levels, as decode_fields has it.
    if not depth_ok(args_json) or not depth_ok(kwargs_json):
        raise PayloadError(f"arguments are nested more than {MAX_DEPTH} levels deep")
