"""Builders of decisions and feedback with chosen event times, for join and learner tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from streams.schemas import Decision, FeatureValue, Feedback, FeedbackKind

from . import synth

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def decision(
    t: float,
    event_id: uuid.UUID | None = None,
    action: int = 0,
    context: dict[str, FeatureValue] | None = None,
) -> Decision:
    n = len(synth.ACTIONS)
    return Decision(
        event_id=event_id or uuid.uuid4(),
        ts=at(t),
        product_id="p1",
        channel="ad_headline",
        pool_version=1,
        policy_version="test",
        context=context or {"u_age": "18-24", "c_channel": "ad_headline"},
        actions=synth.ACTIONS.ids,
        action_features=synth.ACTIONS.features,
        action=action,
        pscore=1.0 / n,
        action_dist=[1.0 / n] * n,
    )


def feedback(
    d: Decision | uuid.UUID, kind: FeedbackKind, t: float, fid: str | None = None
) -> Feedback:
    eid = d if isinstance(d, uuid.UUID) else d.event_id
    return Feedback(feedback_id=fid or f"{eid}-{kind}-{t}", event_id=eid, ts=at(t), kind=kind)
