"""One exception root for everything that touches Kafka; foreign errors are wrapped, kept as
``__cause__`` so the original ``KafkaError`` is never lost."""

from __future__ import annotations


class StreamsError(Exception):
    """Root of the errors raised by ``streams``."""


class SerdeError(StreamsError):
    """Bytes that do not decode to a valid event. ``reason`` names the failing field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BrokerUnavailable(StreamsError):
    """The broker could not be reached (or did not answer in time)."""


class ProduceError(StreamsError):
    """A message could not be delivered to its topic."""


class LocalKafkaError(StreamsError):
    """The local single-node broker could not be resolved, formatted, started or stopped."""
