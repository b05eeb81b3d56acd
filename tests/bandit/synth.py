"""A small synthetic world where the best copy depends on the shopper: young women in tier-1
cities click urgency/discount copy, older men in tier-2 cities click quality/brand copy."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bandit.features import action_features, encode_context
from bandit.policy import ActionSet
from streams.schemas import FeatureValue, Variant

KEY = b"synthetic-key"

VARIANTS = [
    Variant(
        variant_id="v-urgent",
        text="限时8折 仅剩今天",
        language="zh",
        channel="ad_headline",
        traits=["urgency", "discount"],
    ),
    Variant(
        variant_id="v-quality",
        text="羊毛品质 大牌面料",
        language="zh",
        channel="ad_headline",
        traits=["quality", "brand"],
    ),
    Variant(
        variant_id="v-warm",
        text="冬日温暖 宠爱自己",
        language="zh",
        channel="ad_headline",
        traits=["emotion"],
    ),
    Variant(
        variant_id="v-popular",
        text="爆款热销 好评如潮",
        language="zh",
        channel="ad_headline",
        traits=["social_proof"],
    ),
]
ACTIONS = ActionSet([(v.variant_id, action_features(v, "gen-1")) for v in VARIANTS])
BEST = {"young-f": "v-urgent", "older-m": "v-quality"}
HIGH, LOW = 0.6, 0.08


@dataclass(frozen=True)
class Shopper:
    segment: str
    user: dict[str, Any]


def shopper(rng: random.Random, i: int) -> Shopper:
    if rng.random() < 0.5:
        user = {"user_id": f"a{i % 300}", "age": rng.randint(18, 29), "gender": "f", "city_tier": 1}
        return Shopper("young-f", user)
    user = {"user_id": f"b{i % 300}", "age": rng.randint(40, 65), "gender": "m", "city_tier": 2}
    return Shopper("older-m", user)


def context(s: Shopper, hour: int = 20) -> dict[str, FeatureValue]:
    return encode_context(s.user, {"channel": "ad_headline", "hour": hour}, hash_key=KEY)


def clicked(rng: random.Random, s: Shopper, variant_id: str) -> bool:
    return rng.random() < (HIGH if BEST[s.segment] == variant_id else LOW)
