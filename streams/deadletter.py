"""The dead-letter path: anything that could not be parsed, joined or processed is recorded
with where it came from, its raw bytes and the reason, and the consumer goes on."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from streams.producer import EventSink
from streams.schemas import DeadLetter


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


@dataclass
class DeadLetterWriter:
    sink: EventSink
    topic: str
    count: int = 0

    def send(
        self,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
    ) -> DeadLetter:
        letter = DeadLetter(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            reason=reason,
            raw=b64(value) or "",
            key=b64(key),
        )
        # keyed by the original key, as CONTRACT.md §1 asks
        key_text = key.decode("utf-8", errors="replace") if key is not None else None
        self.sink.add(self.topic, key_text, letter)
        self.count += 1
        return letter

    def flush(self, timeout_s: float | None = None) -> None:
        self.sink.flush(timeout_s)
