"""A sink whose dead letters fail on demand, for the tests of what a stream error does."""

from __future__ import annotations

from streams.errors import ProduceError
from streams.producer import EventSink
from streams.schemas import DeadLetter, Event


class FailingSink:
    """A sink in front of a real one whose dead letters fail as chosen: the next ``refuse``
    letters are refused when added (as an oversized record is), the next ``lose`` are taken
    and then reported undelivered by the next flush (as a broker error is)."""

    def __init__(self, inner: EventSink, *, refuse: int = 0, lose: int = 0) -> None:
        self.inner, self.refuse, self.lose = inner, refuse, lose
        self._lost = 0

    def add(self, topic: str, key: str | None, event: Event) -> None:
        if isinstance(event, DeadLetter) and self.refuse > 0:
            self.refuse -= 1
            raise ProduceError("refused: the record is too large")
        if isinstance(event, DeadLetter) and self.lose > 0:
            self.lose -= 1
            self._lost += 1
            return
        self.inner.add(topic, key, event)

    def flush(self, timeout_s: float | None = None) -> None:
        self.inner.flush(timeout_s)
        if self._lost:
            lost, self._lost = self._lost, 0
            raise ProduceError(f"{lost} message(s) not delivered")
