"""A one-product world with hand-written copy whose click rates are known: one variant breaks
the advertising law (an absolute term) and is the one shoppers click most."""

from __future__ import annotations

from generator.sampling import variant_id
from generator.traits import detect_traits
from service.finetune.synthetic import uniform_log
from service.replay.replay_log import ReplayLog
from service.simulate.catalog import make_catalog
from service.simulate.scenario import Scenario, parse_scenario
from streams.schemas import Product, Variant, VariantPool

PRODUCT = make_catalog(1, "zh", 3)[0]
TITLE = PRODUCT.title
UNLAWFUL = f"全网最佳{TITLE}！"  # ad_law_absolute; carries `exclaim`, which shoppers love
TEXTS = (TITLE, f"限时抢购{TITLE}", f"{TITLE}，品质之选", UNLAWFUL, f"温暖上新{TITLE}")


def pool() -> VariantPool:
    return VariantPool(
        product_id=PRODUCT.product_id,
        pool_version=1,
        generator_version="hand-written",
        variants=[
            Variant(
                variant_id=variant_id(t, "zh", "ad_headline"),
                text=t,
                language="zh",
                channel="ad_headline",
                traits=detect_traits(t, language="zh", channel="ad_headline", brand=PRODUCT.brand),
            )
            for t in TEXTS
        ],
    )


def scenario(decisions: int) -> Scenario:
    return parse_scenario(
        {
            "name": "finetune-test",
            "decisions": decisions,
            "products": 1,
            "base_ctr": 0.05,
            "segments": [
                {
                    "name": "young-f",
                    "weight": 1.0,
                    "user": {"age": [25, 29], "gender": "f"},
                    "trait_effects": {"exclaim": 2.0, "urgency": 1.2, "emotion": -1.5},
                }
            ],
        }
    )


def world_log(decisions: int, seed: int = 0) -> tuple[list[Product], list[VariantPool], ReplayLog]:
    products, pools = [PRODUCT], [pool()]
    _, log = uniform_log(scenario(decisions), products, pools, seed=seed)
    return products, pools, log
