"""JSON (UTF-8) serialisation of the events, with errors that name the failing field."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import TypeVar

from pydantic import ValidationError

from streams.errors import SerdeError
from streams.schemas import Event

E = TypeVar("E", bound=Event)


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode("utf-8")


def describe(exc: ValidationError) -> str:
    """``field `a.b`: message; ...`` — one line a person (or a 4xx body) can act on."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"field `{loc}`: {err['msg']}")
    return "; ".join(parts)


def decode(model: type[E], data: bytes | None) -> E:
    """Parse one message value into ``model``; any failure is a :class:`SerdeError`."""
    if data is None:
        raise SerdeError("empty value (tombstone or null message)")
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise invalid(model, exc) from exc


def invalid(model: type[Event], exc: ValidationError) -> SerdeError:
    """The error :func:`decode` raises for a value that ``model`` refuses."""
    return SerdeError(f"invalid {model.__name__}: {describe(exc)}")


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Bulk decoding (a replay's logs, a restored checkpoint) makes millions of acyclic
    containers; the cycle collector, woken by their count, would walk everything the process
    holds again and again (about 40% of the decode time). Off for the block, then as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
