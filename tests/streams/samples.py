"""One valid instance of every event model, for round-trip tests."""

from __future__ import annotations

import uuid

from streams.schemas import (
    ActionFeatures,
    DeadLetter,
    Decision,
    Event,
    Feedback,
    ModelAnnouncement,
    Product,
    Variant,
    VariantPool,
)


def sample_decision() -> Decision:
    feats = ActionFeatures(
        traits=["discount", "urgency"],
        language="zh",
        length_bucket="short",
        generator_version="boot-1",
    )
    return Decision(
        event_id=uuid.UUID("2b0f2c4e-8f6a-4c1e-9a55-3f1f0b7f9d10"),
        product_id="scarf-01",
        channel="ad_headline",
        pool_version=3,
        policy_version="bandit-7",
        context={"age": "18-24", "user": "hk:9f2c", "recent": ["apparel", "beauty"], "hour": 21},
        actions=["v1", "v2", "v3"],
        action_features=[feats, feats, feats],
        action=1,
        pscore=0.8,
        action_dist=[0.1, 0.8, 0.1],
    )


def sample_events() -> list[Event]:
    return [
        Product(
            product_id="scarf-01",
            title="羊毛围巾",
            category="apparel",
            brand="暖洋洋",
            price=199.0,
            sale_price=159.0,
            attributes={"material": "羊毛"},
        ),
        VariantPool(
            product_id="scarf-01",
            pool_version=3,
            generator_version="boot-1",
            variants=[
                Variant(
                    variant_id="v1",
                    text="限时8折！羊毛围巾仅¥159",
                    language="zh",
                    channel="ad_headline",
                    traits=["discount", "urgency", "price"],
                ),
                Variant(
                    variant_id="v2",
                    text="Cozy wool scarf for winter",
                    language="en",
                    channel="push",
                    traits=["emotion", "festive"],
                ),
            ],
        ),
        sample_decision(),
        Feedback(feedback_id="f-1", event_id=uuid.uuid4(), kind="purchase", value=159.0),
        ModelAnnouncement(
            kind="bandit",
            version="bandit-7",
            uri="file:///tmp/m.vw",
            learned_events=1234,
            metrics={"loss": 0.12},
        ),
        DeadLetter(
            source_topic="copyloop.feedback",
            partition=1,
            offset=42,
            reason="bad",
            raw="e30=",
            key="aw==",
        ),
    ]
