"""Line level of ``copyloop replay``'s log reading: the few fields replay decodes from each
JSON line (msgspec, the rest of the line skipped unparsed), and, for a line that fails, the
contract's pydantic model, whose message names the field; errors carry the file and line.

A full pydantic ``Decision`` costs ~100 µs a line here, far over the 200,000 events/s budget
(TARGETS.md), hence the two decoders."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from bandit.wire import MAX_ACTIONS, AwareTime, DecisionRow, EventIdText
from service.errors import ReplayError
from streams.schemas import Decision, Feedback
from streams.serde import describe


class FeedbackRow(msgspec.Struct, gc=False):
    feedback_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    event_id: EventIdText
    ts: AwareTime
    kind: Literal["impression", "click", "add_to_cart", "purchase"]
    schema_version: Literal[1] = 1

    @classmethod
    def of(cls, f: Feedback) -> FeedbackRow:
        return cls(f.feedback_id, str(f.event_id), f.ts, f.kind)


POOL = msgspec.json.Decoder(
    Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=128)]],
        msgspec.Meta(min_length=1, max_length=MAX_ACTIONS),
    ]
)


_HYPHENS = [8, 13, 18, 23]
_HEX_DIGITS = [c for c in range(36) if c not in _HYPHENS]
_LOWER_HEX = np.zeros(256, dtype=bool)
_LOWER_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = True


def canonical_uuids(ids: list[str]) -> tuple[list[str], int | None]:
    """``ids`` as canonical UUID strings (lower-case, hyphenated) and the index of the first
    that is no UUID (``None`` when all are). Canonical ids, which is what the contract's models
    write, are checked on one byte array; only the others go through ``uuid.UUID``."""
    n = len(ids)
    if n == 0:
        return ids, None
    odd: NDArray[np.intp]
    try:
        if not (np.fromiter(map(len, ids), np.intp, n) == 36).all():
            raise ValueError("not all 36 characters")
        raw = np.frombuffer("".join(ids).encode("ascii"), np.uint8).reshape(n, 36)
        ok = (raw[:, _HYPHENS] == ord("-")).all(axis=1) & _LOWER_HEX[raw[:, _HEX_DIGITS]].all(
            axis=1
        )
        odd = np.flatnonzero(~ok)
    except (ValueError, UnicodeEncodeError):
        odd = np.arange(n)
    if odd.size == 0:
        return ids, None
    out = list(ids)
    for i in odd.tolist():
        try:
            out[i] = str(UUID(ids[i]))
        except ValueError:
            return out, i
    return out, None


# -- line level --------------------------------------------------------------------------------
def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror or exc}") from exc


def nonblank(path: Path, data: bytes) -> list[tuple[int, bytes]]:
    return [(i, line) for i, line in enumerate(data.split(b"\n"), 1) if line.strip()]


def bad_line(path: Path, lineno: int, what: str) -> ReplayError:
    return ReplayError(f"{path.name}:{lineno}: {what}")


def _with_pscore(path: Path, lineno: int, line: bytes) -> Any:
    """The line as JSON, with a missing ``pscore`` taken from ``action_dist[action]`` (replay
    warns about those instead of refusing the log)."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise bad_line(path, lineno, f"not JSON: {exc}") from None
    if isinstance(obj, dict) and "pscore" not in obj:
        # when this fails too, the model's message names what is wrong
        with contextlib.suppress(KeyError, IndexError, TypeError):
            obj["pscore"] = obj["action_dist"][obj["action"]]
    return obj


def validate_decision(path: Path, lineno: int, line: bytes) -> Decision:
    try:
        return Decision.model_validate(_with_pscore(path, lineno, line))
    except ValidationError as exc:
        raise bad_line(path, lineno, f"invalid Decision: {describe(exc)}") from None


def validate_feedback(path: Path, lineno: int, line: bytes) -> Feedback:
    try:
        return Feedback.model_validate_json(line)
    except ValidationError as exc:
        raise bad_line(path, lineno, f"invalid Feedback: {describe(exc)}") from None


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "decision": msgspec.json.Decoder(DecisionRow),
    "feedback": msgspec.json.Decoder(FeedbackRow),
}


def decode_file(path: Path, kind: Literal["decision", "feedback"], strict: bool) -> list[Any]:
    data = read_file(path)
    decoder = _DECODERS[kind]
    validate = validate_decision if kind == "decision" else validate_feedback
    if strict:
        for n, line in nonblank(path, data):
            validate(path, n, line)
    try:
        return list(decoder.decode_lines(data))
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    # a line failed: go line by line; a line the contract's model accepts (msgspec is stricter
    # about a few formats) is kept, any other gets the model's message naming the field
    rows: list[Any] = []
    for n, line in nonblank(path, data):
        try:
            rows.append(decoder.decode(line))
        except (msgspec.ValidationError, msgspec.DecodeError):
            event = validate(path, n, line)
            if isinstance(event, Decision):
                rows.append(DecisionRow.of(event))
            else:
                rows.append(FeedbackRow.of(event))
    return rows
