"""Model shards: which learner shard owns a product, a partition and an event id.

The contract keys decisions and feedback by ``event_id``, and feedback carries nothing else
that names its decision's product, so a shard cannot be found from a feedback record's value.
Ownership is therefore by partition: shard ``k`` of ``S`` owns every partition ``p`` of the
decisions and feedback topics with ``p % S == k``, and the ranker draws each decision's
``event_id`` until Kafka's default partitioner (murmur2 of the key, as the Java client and
kafka-python place records) puts it on a partition of the shard that owns the product. Feedback
keyed by that ``event_id`` then lands on the same partition number of the feedback topic with no
routing by anyone, the ad server included, as long as both topics have the same partition count.

The shard key is the product id: it is in every decision (so a learner can check that what it
reads is its own) and in the ranker's pool cache, whereas the category is in neither."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from kafka.partitioner.default import murmur2

from streams.errors import StreamsError

#: draws per event id before giving up; with every shard owning at least one partition of
#: ``P`` a draw succeeds with probability >= 1/P, so 4,096 draws fail with odds below e^-16
#: for P <= 256
_MAX_DRAWS = 4096


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Sharding:
    """``shards`` model shards (one, the default, is no sharding at all)."""

    shards: int = 1

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise StreamsError(f"`shards` must be >= 1, got {self.shards}")

    def check(self, shard: int) -> None:
        if not 0 <= shard < self.shards:
            raise StreamsError(f"`shard` must be in [0, {self.shards}), got {shard}")

    def check_partitions(self, topic: str, partitions: int) -> None:
        """Every shard must own a partition of ``topic``."""
        if partitions < self.shards:
            raise StreamsError(
                f"`{topic}` has {partitions} partition(s): {self.shards} shards need at least "
                f"{self.shards} (a multiple of the shard count spreads the work evenly)"
            )

    def of_product(self, product_id: str) -> int:
        """The shard that owns ``product_id`` (a stable hash: every process agrees)."""
        if self.shards == 1:
            return 0
        return zlib.crc32(product_id.encode("utf-8")) % self.shards

    def of_partition(self, partition: int) -> int:
        return partition % self.shards

    def owned_by(self, shard: int) -> Callable[[int], bool]:
        """A test of whether a partition belongs to ``shard``."""
        self.check(shard)
        shards = self.shards
        return lambda partition: partition % shards == shard

    def event_id(self, shard: int, partitions: int, draw: Callable[[], UUID]) -> UUID:
        """An id from ``draw`` whose record lands on a partition ``shard`` owns (the first
        draw with one shard). Each draw is ~10 µs of hashing; ``shards`` draws on average
        when the partitions are a multiple of the shards."""
        if self.shards == 1:
            return draw()
        self.check_partitions("the decisions topic", partitions)
        for _ in range(_MAX_DRAWS):
            candidate = draw()
            partition = key_partition(str(candidate).encode("ascii"), partitions)
            if partition % self.shards == shard:
                return candidate
        raise StreamsError(f"no event id for shard {shard} in {_MAX_DRAWS} draws")
