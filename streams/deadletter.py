"""The dead-letter path: anything that could not be parsed, joined or processed is recorded
with where it came from, its raw bytes and the reason, and the consumer goes on.

A letter is bounded whatever it reports on: it keeps a prefix of the value (``raw``), the
whole value's length (``raw_size``) and sha256 (``raw_sha256``), a prefix of the key and of the
reason. The bad message itself may be as large as the broker accepts; its letter, base64 and all,
stays far below the producer's size limit, so recording it can never fail for its size (a
failed letter would stop the consumer, or worse, be skipped)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from streams.producer import MAX_MESSAGE_BYTES, EventSink
from streams.schemas import DeadLetter

#: how much of a bad value a letter keeps by default: enough to read what went wrong
DEFAULT_RAW_PREFIX_BYTES = 64 * 1024
#: how much of a bad key a letter keeps (in the letter and as the letter's own record key)
KEY_PREFIX_BYTES = 1024
#: how long a reason may be; a parser's message can quote its input
REASON_MAX_CHARS = 2000
#: room for everything in a letter but the value: the key (base64), reason, names, JSON
_LETTER_OVERHEAD_BYTES = 4 * KEY_PREFIX_BYTES + 4 * REASON_MAX_CHARS + 4096


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


@dataclass
class DeadLetterWriter:
    sink: EventSink
    topic: str
    count: int = 0
    #: bytes of the bad value kept in ``raw``; base64 makes a third more of them
    max_raw_bytes: int = DEFAULT_RAW_PREFIX_BYTES

    def __post_init__(self) -> None:
        limit = (MAX_MESSAGE_BYTES - _LETTER_OVERHEAD_BYTES) * 3 // 4
        if not 0 <= self.max_raw_bytes <= limit:
            raise ValueError(
                f"`max_raw_bytes` must be in [0, {limit}] so a letter fits in a record of "
                f"{MAX_MESSAGE_BYTES} bytes, got {self.max_raw_bytes}"
            )

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
        data = value or b""
        short_key = None if key is None else key[:KEY_PREFIX_BYTES]
        letter = DeadLetter(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            reason=reason[:REASON_MAX_CHARS] or "(no reason given)",
            raw=b64(data[: self.max_raw_bytes]) or "",
            key=b64(short_key),
            raw_size=len(data),
            raw_sha256=hashlib.sha256(data).hexdigest(),
        )
        # keyed by the original key, as CONTRACT.md §1 asks
        key_text = short_key.decode("utf-8", errors="replace") if short_key is not None else None
        self.sink.add(self.topic, key_text, letter)
        self.count += 1
        return letter

    def flush(self, timeout_s: float | None = None) -> None:
        self.sink.flush(timeout_s)
