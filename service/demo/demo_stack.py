"""The whole loop on one machine (``copyloop demo``): a local Kafka, the learner and the HTTP
service as child processes, pools written by the real generator through ``PUT
/v1/products``, and simulated shoppers who ask ``/v1/rank`` and report impressions and clicks
through ``/v1/feedback``. Shoppers click with the scenario's known probabilities, so the demo
can show the bandit's CTR beside what uniform choice and an oracle would have earned."""

from __future__ import annotations

import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from generator.traits import detect_traits
from service.errors import DemoError
from service.settings import Settings
from service.simulate.catalog import make_catalog
from service.simulate.scenario import Scenario
from streams.schemas import Product


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
            raise DemoError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")


def start_child(name: str, args: list[str], env: dict[str, str], logs: Path) -> Child:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(  # noqa: S603 - our own command line
            [sys.executable, "-m", "service", *args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Child(name, proc, log)


def child_env(settings: Settings, bootstrap: str, *, window_s: float, snapshot_s: float) -> dict:
    """The children's settings: short reward windows and frequent snapshots so that learning is
    visible within minutes; a fresh admin key unless one is set."""
    admin = settings.admin_key.get_secret_value() if settings.admin_key else secrets.token_hex(16)
    return os.environ | {
        "COPYLOOP_KAFKA_BOOTSTRAP": bootstrap,
        "COPYLOOP_TOPIC_PREFIX": settings.topic_prefix,
        "COPYLOOP_DATA_DIR": str(settings.data_dir.resolve()),
        "COPYLOOP_REWARD_WINDOW_S": str(window_s),
        "COPYLOOP_SNAPSHOT_EVERY_S": str(snapshot_s),
        "COPYLOOP_ADMIN_KEY": admin,
    }


def wait_ready(client: httpx.Client, children: list[Child], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in children:
            child.check()
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise DemoError(f"the service did not become ready within {timeout_s:.0f} s")


def publish_products(
    client: httpx.Client,
    products: list[Product],
    channel: str,
    n: int,
    on_done: Callable[[], None],
    timeout_s: float = 600.0,
) -> None:
    """PUT every product (the service generates and publishes its pool) and wait for the jobs."""
    jobs = {}
    for p in products:
        r = client.put(
            f"/v1/products/{p.product_id}",
            params={"channel": channel, "n": n},
            json=p.model_dump(mode="json"),
        )
        if r.status_code != 202:
            raise DemoError(f"PUT {p.product_id}: {r.status_code} {r.text}")
        jobs[p.product_id] = r.json()["job_id"]
    deadline = time.monotonic() + timeout_s
    while jobs and time.monotonic() < deadline:
        for pid, job in list(jobs.items()):
            view = client.get(f"/v1/jobs/{job}").json()
            if view["state"] == "failed":
                raise DemoError(f"generating {pid} failed: {view.get('error')}")
            if view["state"] == "succeeded":
                del jobs[pid]
                on_done()
        time.sleep(0.3)
    if jobs:
        raise DemoError(f"generation did not finish for {sorted(jobs)}")


@dataclass
class Tally:
    """Running figures: the bandit's clicks and, for the same shoppers, the click probability a
    uniform choice and the best variant (oracle) would have had."""

    window: int = 1000
    decisions: int = 0
    clicks: int = 0
    expected_uniform: float = 0.0
    expected_oracle: float = 0.0
    recent: deque[tuple[int, float, float]] = field(default_factory=deque)
    policy_version: str = "-"
    errors: int = 0

    def add(self, clicked: bool, uniform_p: float, oracle_p: float) -> None:
        self.decisions += 1
        self.clicks += clicked
        self.expected_uniform += uniform_p
        self.expected_oracle += oracle_p
        self.recent.append((int(clicked), uniform_p, oracle_p))
        if len(self.recent) > self.window:
            self.recent.popleft()

    def rows(self) -> dict[str, float]:
        n = max(len(self.recent), 1)
        return {
            "bandit CTR (recent)": sum(r[0] for r in self.recent) / n,
            "uniform CTR (expected, recent)": sum(r[1] for r in self.recent) / n,
            "oracle CTR (expected, recent)": sum(r[2] for r in self.recent) / n,
            "bandit CTR (all)": self.clicks / max(self.decisions, 1),
            "uniform CTR (expected, all)": self.expected_uniform / max(self.decisions, 1),
        }


class Shoppers:
    """Draws shoppers from the scenario's segments and decides their clicks from the traits of
    the text they were shown (CONTRACT.md §6)."""

    def __init__(self, scenario: Scenario, products: list[Product], seed: int) -> None:
        self.scenario = scenario
        self.products = products
        self.rng = np.random.default_rng(seed)
        self.base = math.log(scenario.base_ctr / (1 - scenario.base_ctr))
        self.pools: dict[str, list[tuple[str, ...]]] = {}

    def learn_pool(self, product: Product, texts: list[str]) -> None:
        self.pools[product.product_id] = [
            tuple(
                detect_traits(
                    t, language=product.language, channel=self.scenario.channel, brand=product.brand
                )
            )
            for t in texts
        ]

    def p_click(self, segment: int, traits: tuple[str, ...]) -> float:
        effects = self.scenario.segments[segment].trait_effects
        return _sigmoid(self.base + sum(effects.get(t, 0.0) for t in traits))

    def arrive(self) -> tuple[int, dict[str, Any], Product]:
        s = int(self.rng.choice(len(self.scenario.segments), p=self.scenario.weights))
        spec = self.scenario.segments[s].user
        user: dict[str, Any] = {"user_id": f"demo-{s}-{int(self.rng.integers(0, 200))}"}
        if spec.age is not None:
            user["age"] = int(self.rng.integers(spec.age[0], spec.age[1] + 1))
        if spec.gender is not None:
            user["gender"] = spec.gender
        if spec.city_tier is not None:
            user["city_tier"] = spec.city_tier
        product = self.products[int(self.rng.integers(0, len(self.products)))]
        return s, user, product


def shop_once(client: httpx.Client, shoppers: Shoppers, tally: Tally) -> None:
    s, user, product = shoppers.arrive()
    r = client.post(
        "/v1/rank",
        json={
            "product_id": product.product_id,
            "channel": shoppers.scenario.channel,
            "user": user,
            "context": {"device": "app"},
        },
    )
    if r.status_code != 200:
        tally.errors += 1
        return
    answer = r.json()
    tally.policy_version = answer["policy_version"]
    traits = tuple(
        detect_traits(
            answer["text"],
            language=product.language,
            channel=shoppers.scenario.channel,
            brand=product.brand,
        )
    )
    p = shoppers.p_click(s, traits)
    probs = [shoppers.p_click(s, ts) for ts in shoppers.pools.get(product.product_id, [traits])]
    clicked = bool(shoppers.rng.random() < p)
    eid = answer["event_id"]
    feedback = [{"feedback_id": f"{eid}-i", "event_id": eid, "kind": "impression"}]
    if clicked:
        feedback.append({"feedback_id": f"{eid}-c", "event_id": eid, "kind": "click"})
    if client.post("/v1/feedback", json=feedback).status_code != 202:
        tally.errors += 1
    tally.add(clicked, sum(probs) / len(probs), max(probs))


def demo_products(scenario: Scenario) -> list[Product]:
    if isinstance(scenario.products, list):
        return scenario.products
    return make_catalog(scenario.products, scenario.language, scenario.seed)
