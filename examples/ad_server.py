"""An example ad server, written the way a real client of copyloop would be.

It keeps its own copy of the current pools by consuming the compacted ``copyloop.variants``
topic (so it can render any variant without asking), asks ``POST /v1/rank`` which variant each
shopper sees, shows it, and reports what happened with ``POST /v1/feedback``: an impression
when the copy is shown, a click when the shopper clicks.

    python examples/ad_server.py --api http://127.0.0.1:8000 --requests 200

Shoppers here are simulated (a made-up click rate per trait); replace ``Shopper`` with real
traffic. Settings come from the usual ``COPYLOOP_*`` variables (broker, topic prefix).
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from service.settings import Settings
from streams.consumer import EventConsumer
from streams.errors import StreamsError
from streams.schemas import Variant, VariantPool


class PoolMirror:
    """The ad server's cache of the current pools, fed by the variants topic (from the start:
    it is compacted, so that is one pool per product)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = EventConsumer(bootstrap, {topic: VariantPool}, group_id=None)
        self.pools: dict[str, VariantPool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pool-mirror", daemon=True)

    def start(self) -> PoolMirror:
        self._consumer.assign()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                records = self._consumer.poll(0.5)
            except StreamsError as exc:  # the broker went away: keep serving what we have
                print(f"pool mirror: {exc}; retrying")
                self._stop.wait(1.0)
                continue
            for rec in records:
                pool = rec.event
                if not isinstance(pool, VariantPool):
                    continue
                held = self.pools.get(pool.product_id)
                if held is None or pool.pool_version > held.pool_version:
                    self.pools[pool.product_id] = pool

    def variant(self, product_id: str, variant_id: str) -> Variant | None:
        pool = self.pools.get(product_id)
        return (
            next((v for v in pool.variants if v.variant_id == variant_id), None) if pool else None
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


@dataclass
class Shopper:
    """A simulated shopper: clicks with a base rate, nudged by the traits of the copy."""

    user: dict[str, Any]
    likes: dict[str, float]
    base_ctr: float = 0.05

    def clicks(self, variant: Variant, rng: random.Random) -> bool:
        p = self.base_ctr + sum(self.likes.get(t, 0.0) for t in variant.traits)
        return rng.random() < min(max(p, 0.0), 1.0)


@dataclass
class Tally:
    shown: int = 0
    clicks: int = 0
    errors: int = 0
    by_variant: dict[str, int] = field(default_factory=dict)


class AdServer:
    def __init__(self, http: httpx.Client, mirror: PoolMirror) -> None:
        self.http = http
        self.mirror = mirror

    def show(self, product_id: str, channel: str, user: dict[str, Any]) -> tuple[str, Variant]:
        """Ask copyloop which variant to show; render it from our own cache."""
        r = self.http.post(
            "/v1/rank",
            json={"product_id": product_id, "channel": channel, "user": user, "context": {}},
        )
        r.raise_for_status()
        answer = r.json()
        variant = self.mirror.variant(product_id, answer["variant_id"])
        if variant is None:  # a pool newer than our cache: the answer carries the text too
            variant = Variant(
                variant_id=answer["variant_id"], text=answer["text"], language="zh", channel=channel
            )
        return answer["event_id"], variant

    def report(self, event_id: str, kind: str) -> None:
        feedback = {"feedback_id": f"{event_id}:{kind}", "event_id": event_id, "kind": kind}
        self.http.post("/v1/feedback", json=feedback).raise_for_status()


def run(server: AdServer, requests: int, channel: str, seed: int) -> Tally:
    rng = random.Random(seed)  # noqa: S311 - simulated shoppers, not security
    shoppers = [
        Shopper({"age": 22, "gender": "f", "city_tier": 1}, {"urgency": 0.08, "discount": 0.04}),
        Shopper({"age": 48, "gender": "m", "city_tier": 2}, {"quality": 0.08, "brand": 0.05}),
    ]
    tally = Tally()
    for _ in range(requests):
        products = sorted(server.mirror.pools)
        if not products:
            time.sleep(0.2)
            continue
        shopper = rng.choice(shoppers)
        user = {**shopper.user, "user_id": f"shopper-{rng.randrange(1000)}"}
        try:
            event_id, variant = server.show(rng.choice(products), channel, user)
            server.report(event_id, "impression")
            tally.shown += 1
            tally.by_variant[variant.variant_id] = tally.by_variant.get(variant.variant_id, 0) + 1
            if shopper.clicks(variant, rng):
                server.report(event_id, "click")
                tally.clicks += 1
        except httpx.HTTPError as exc:
            tally.errors += 1
            print(f"request failed: {exc}")
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the copyloop service")
    parser.add_argument("--requests", type=int, default=200, help="shoppers to serve")
    parser.add_argument("--channel", default="ad_headline")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = Settings()
    mirror = PoolMirror(settings.kafka_bootstrap, settings.topics.variants).start()
    time.sleep(2)  # let the mirror read the current pools
    with httpx.Client(base_url=args.api, timeout=5.0) as http:
        tally = run(AdServer(http, mirror), args.requests, args.channel, args.seed)
    mirror.close()
    ctr = tally.clicks / tally.shown if tally.shown else 0.0
    print(
        f"shown {tally.shown}, clicks {tally.clicks} (CTR {ctr:.2%}), errors {tally.errors}, "
        f"pools cached {len(mirror.pools)}"
    )


if __name__ == "__main__":
    main()
