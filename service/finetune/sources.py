"""Where a round's inputs come from besides the log: the products (a catalog file, since the
service keeps none on a topic) and the pools (the compacted variants topic, every version still
on it, so decisions made on an older pool still find their texts)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from service.errors import BadRequest
from streams.consumer import EventConsumer
from streams.deadletter import DeadLetterWriter
from streams.producer import MemorySink
from streams.schemas import Product, VariantPool
from streams.topics import Topics

_PRODUCTS = TypeAdapter(list[Product])


def load_products(path: Path) -> list[Product]:
    """A JSON list of products, or JSON lines with one product each."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadRequest("--products", f"cannot read {path}: {exc}") from exc
    try:
        stripped = text.lstrip()
        if stripped.startswith("["):
            return _PRODUCTS.validate_json(text)
        return [Product.model_validate_json(line) for line in text.splitlines() if line.strip()]
    except (ValidationError, json.JSONDecodeError) as exc:
        raise BadRequest("--products", f"{path} holds no valid product list: {exc}") from exc


def read_pools(bootstrap: str, topics: Topics, *, idle_s: float = 5.0) -> list[VariantPool]:
    """Every pool on the variants topic, from the beginning to its current end."""
    consumer = EventConsumer(
        bootstrap,
        {topics.variants: VariantPool},
        group_id=None,
        deadletter=DeadLetterWriter(MemorySink(), topics.deadletter),
        client_id="copyloop-finetune",
    )
    pools: list[VariantPool] = []
    try:
        consumer.assign()
        ends = consumer.end_offsets()
        while any(consumer.positions.get(k, 0) < end for k, end in ends.items()):
            batch = consumer.poll(timeout_s=idle_s, max_records=5000)
            if not batch:
                break
            pools.extend(r.event for r in batch if isinstance(r.event, VariantPool))
    finally:
        consumer.close()
    return pools
