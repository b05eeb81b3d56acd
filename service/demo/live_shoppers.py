"""The demo's live shoppers: the simulator's world, served over HTTP instead of replayed in
arrays. Each shopper is drawn from the scenario's segments (``Scenario.draw_user``), asks
``/v1/rank``, and clicks with the scenario's own click model (``Scenario.click_probability``)
on the traits of the text shown, then reports through ``/v1/feedback``. Knowing every variant's
click probability, the tally can set the bandit's CTR beside what a uniform choice and an
oracle would have earned for the same shoppers. When a fine-tune round refreshes a pool, the
rank answers carry its new ``pool_version`` and the shoppers read the new pool, so the uniform
and oracle figures follow the copy actually on offer."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from generator.traits import detect_traits
from service.finetune.trigger import RoundRecord
from service.simulate.catalog import make_catalog
from service.simulate.scenario import Scenario
from streams.schemas import Product

#: returning shoppers per segment
POPULATION = 200
#: longest verdict the live table shows (the gate's reason names every failed check)
VERDICT_CHARS = 110


@dataclass(frozen=True)
class Figures:
    """Expected CTRs over a stretch of decisions: the bandit's (the true click probability of
    what it showed), a uniform choice's and the oracle's, for the same shoppers."""

    decisions: int
    bandit: float
    uniform: float
    oracle: float

    @property
    def x_oracle(self) -> float:
        return self.bandit / self.oracle if self.oracle > 0 else float("nan")

    @property
    def x_uniform(self) -> float:
        return self.bandit / self.uniform if self.uniform > 0 else float("nan")


def _figures(rows: list[tuple[float, float, float, float]]) -> Figures:
    n = len(rows)
    if n == 0:
        return Figures(0, 0.0, 0.0, 0.0)
    sums = np.asarray(rows, dtype=np.float64)[:, 1:].sum(axis=0) / n
    return Figures(n, float(sums[0]), float(sums[1]), float(sums[2]))


@dataclass
class Tally:
    """Running figures of the demo. Clicks are drawn, so a clicked CTR over a few thousand
    decisions is too noisy to judge a policy by; the demo knows every variant's true click
    probability, so it compares expected CTRs: the bandit's (of what it showed) beside a
    uniform choice's and the oracle's for the same shoppers, over the last ``window``
    decisions and over the last ``last_s`` seconds."""

    window: int = 5000
    last_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    decisions: int = 0
    clicks: int = 0
    #: (time, bandit p, uniform p, oracle p) of the last ``window`` decisions
    recent: deque[tuple[float, float, float, float]] = field(default_factory=deque)
    #: the same for the last ``last_s`` seconds (however many decisions that is)
    last: deque[tuple[float, float, float, float]] = field(default_factory=deque)
    policy_version: str = "-"
    errors: int = 0
    #: pools the shoppers saw replaced (a fine-tune promotion or rollback) since the start
    pool_swaps: int = 0

    def add(self, clicked: bool, shown_p: float, uniform_p: float, oracle_p: float) -> None:
        now = self.clock()
        self.decisions += 1
        self.clicks += clicked
        row = (now, shown_p, uniform_p, oracle_p)
        self.recent.append(row)
        if len(self.recent) > self.window:
            self.recent.popleft()
        self.last.append(row)
        while self.last and self.last[0][0] < now - self.last_s:
            self.last.popleft()

    def recent_figures(self) -> Figures:
        return _figures(list(self.recent))

    def last_figures(self) -> Figures:
        return _figures(list(self.last))

    def rows(self) -> dict[str, str]:
        f = self.recent_figures()
        return {
            f"bandit CTR (expected, last {f.decisions})": f"{f.bandit:.4f}",
            f"uniform CTR (expected, last {f.decisions})": f"{f.uniform:.4f}",
            f"oracle CTR (expected, last {f.decisions})": f"{f.oracle:.4f}",
            "bandit ×oracle": f"{f.x_oracle:.3f}",
            "bandit ×uniform": f"{f.x_uniform:.3f}",
            "bandit CTR (clicked, all)": f"{self.clicks / max(self.decisions, 1):.4f}",
            "pools swapped": str(self.pool_swaps),
        }

    def summary(self) -> str:
        """The demo's last line: what the bandit earned over the last ``last_s`` seconds."""
        f = self.last_figures()
        return (
            f"summary: bandit ×oracle {f.x_oracle:.3f}  bandit ×uniform {f.x_uniform:.3f}  "
            f"(last {self.last_s:.0f} s: {f.decisions} decisions, expected CTR bandit "
            f"{f.bandit:.4f}, uniform {f.uniform:.4f}, oracle {f.oracle:.4f})  "
            f"decisions {self.decisions}  model {self.policy_version}"
        )


@dataclass(frozen=True)
class Arrival:
    """One shopper's visit: their segment, the user and context a request carries, and the
    product they look at."""

    segment: int
    user: dict[str, Any]
    context: dict[str, Any]
    product: Product


class LiveShoppers:
    """Draws shoppers from the scenario's segments and decides their clicks from the traits of
    the text they were shown (CONTRACT.md §6)."""

    def __init__(
        self, scenario: Scenario, products: list[Product], seed: int, population: int = POPULATION
    ) -> None:
        if not products:
            raise ValueError("`products` must not be empty")
        if population < 1:
            raise ValueError(f"`population` must be >= 1, got {population}")
        self.scenario = scenario
        self.products = products
        self.seed = seed
        self.population = population
        self.rng = np.random.default_rng(seed)
        #: per product: the traits of each variant of its pool, for the uniform and oracle CTRs
        self.pools: dict[str, list[tuple[str, ...]]] = {}
        #: per product: the pool version and the generator version of what ``pools`` holds
        self.versions: dict[str, int] = {}
        self.generator_version = "-"

    def traits(self, product: Product, text: str) -> tuple[str, ...]:
        """The traits a shopper reacts to in ``text`` (the simulator's world reads them alike)."""
        return tuple(
            detect_traits(
                text, language=product.language, channel=self.scenario.channel, brand=product.brand
            )
        )

    def learn_pool(self, product: Product, texts: list[str]) -> None:
        self.pools[product.product_id] = [self.traits(product, t) for t in texts]

    def learn_view(self, product: Product, view: dict[str, Any]) -> None:
        """Learn a pool as ``GET /v1/products/{id}/variants`` answers it."""
        self.learn_pool(product, [v["text"] for v in view["variants"]])
        self.versions[product.product_id] = int(view["pool_version"])
        self.generator_version = str(view["generator_version"])

    def arrive(self) -> Arrival:
        weights = self.scenario.weights
        segment = int(self.rng.choice(len(weights), p=weights))
        who = int(self.rng.integers(0, self.population))
        user, device = self.scenario.draw_user(segment, who, seed=self.seed, prefix="demo")
        product = self.products[int(self.rng.integers(0, len(self.products)))]
        return Arrival(segment, user, {"device": device}, product)


def shop_once(client: httpx.Client, shoppers: LiveShoppers, tally: Tally) -> None:
    """One shopper ranks, sees the chosen text, maybe clicks, and reports what happened."""
    visit = shoppers.arrive()
    product, scenario = visit.product, shoppers.scenario
    r = client.post(
        "/v1/rank",
        json={
            "product_id": product.product_id,
            "channel": scenario.channel,
            "user": visit.user,
            "context": visit.context,
        },
    )
    if r.status_code != 200:
        tally.errors += 1
        return
    answer = r.json()
    tally.policy_version = answer["policy_version"]
    known = shoppers.versions.get(product.product_id)
    if known is not None and answer.get("pool_version", known) != known:
        swapped = client.get(f"/v1/products/{product.product_id}/variants")
        if swapped.status_code == 200:
            shoppers.learn_view(product, swapped.json())
            tally.pool_swaps += 1
    shown = shoppers.traits(product, answer["text"])
    p = scenario.click_probability(visit.segment, shown)
    probs = [
        scenario.click_probability(visit.segment, ts)
        for ts in shoppers.pools.get(product.product_id, [shown])
    ]
    clicked = bool(shoppers.rng.random() < p)
    eid = answer["event_id"]
    feedback = [{"feedback_id": f"{eid}-i", "event_id": eid, "kind": "impression"}]
    if clicked:
        feedback.append({"feedback_id": f"{eid}-c", "event_id": eid, "kind": "click"})
    if client.post("/v1/feedback", json=feedback).status_code != 202:
        tally.errors += 1
    tally.add(clicked, p, sum(probs) / len(probs), max(probs))


def demo_products(scenario: Scenario) -> list[Product]:
    """The scenario's own products, or a catalog made from its seed."""
    if isinstance(scenario.products, list):
        return scenario.products
    return make_catalog(scenario.products, scenario.language, scenario.seed)


def finetune_rows(
    rounds: Sequence[RoundRecord], every: int, generator_version: str
) -> dict[str, str]:
    """The live table's fine-tune rows: the last round's number, verdict and the generator
    serving after it (before any round: the generator that wrote the pools)."""
    if every < 1:
        return {"fine-tune": "off"}
    if not rounds:
        return {
            "fine-tune round": f"none yet (one every {every} joined rewards)",
            "fine-tune verdict": "-",
            "generator version": generator_version,
        }
    last = rounds[-1]
    verdict = last.verdict
    if len(verdict) > VERDICT_CHARS:
        verdict = verdict[: VERDICT_CHARS - 1] + "…"
    promoted = sum(r.status == "promoted" for r in rounds)
    trained = f"{last.version}, {last.examples} examples" if last.version else "not trained"
    return {
        "fine-tune round": f"{last.round} ({trained}; {promoted} promoted so far)",
        "fine-tune verdict": verdict,
        "generator version": last.generator_version,
    }


def finetune_summary(rounds: Sequence[RoundRecord], every: int) -> str:
    """The demo's last word on fine-tuning: how its rounds ended and which generator serves."""
    if every < 1:
        return "fine-tune: off"
    if not rounds:
        return f"fine-tune: no round yet (one every {every} joined rewards)"
    counts = {s: sum(r.status == s for r in rounds) for s in ("promoted", "rejected", "skipped")}
    return (
        f"fine-tune: {len(rounds)} round(s), {counts['promoted']} promoted, "
        f"{counts['rejected']} held back, {counts['skipped']} skipped; "
        f"generator {rounds[-1].generator_version}"
    )
