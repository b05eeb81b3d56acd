"""Bad input through the learner, against the real broker, each test ending with counts that
prove every good event learned once and every bad record dead-lettered once with its reason
(see :mod:`tests.faults.counts`):

* oversized and malformed messages on both input topics, between good ones;
* feedback sent two to four times under one id, feedback after its reward window (while its
  decision is still open, and after it closed)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from collections import Counter
from pathlib import Path

import pytest

from bandit.learner import Learner, LearnerConfig
from bandit.promotion import PromotionConfig
from bandit.reward import RewardConfig
from streams.producer import MAX_MESSAGE_BYTES
from streams.schemas import Decision, Event, Feedback
from streams.serde import encode
from streams.topics import Topics
from tests.bandit.events import decision, feedback
from tests.bandit.kafka_util import dead_letters, drive, publish
from tests.faults.counts import report_counts

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WINDOW_S, LATENESS_S = 10.0, 5.0


def _learner(topics: Topics, data_dir: Path, bootstrap: str) -> Learner:
    config = LearnerConfig(
        topics=topics,
        data_dir=data_dir,
        reward=RewardConfig(window_s=WINDOW_S),
        snapshot_every_s=0.5,
        lateness_s=LATENESS_S,
        poll_timeout_s=0.2,
        promotion=PromotionConfig(enabled=False),
    )
    learner = Learner.connect(config, bootstrap)
    learner.start()
    return learner


def _bad_values(rng: random.Random) -> list[bytes]:
    """One of each kind of bad message an ad server or a broken client sends."""
    valid = json.loads(encode(feedback(uuid.uuid4(), "click", 1.0)))
    return [
        b"{" + b"x" * (3 * MAX_MESSAGE_BYTES // 4),  # oversized and not JSON
        json.dumps({**valid, "kind": "y" * (MAX_MESSAGE_BYTES // 2)}).encode(),  # oversized JSON
        b"{not json",
        b"",
        bytes(rng.randrange(256) for _ in range(64)),  # binary noise
        b"[]",
        json.dumps({**valid, "kind": "refund"}).encode(),  # a kind the contract lacks
        json.dumps({**valid, "event_id": "not-a-uuid"}).encode(),
        json.dumps({k: v for k, v in valid.items() if k != "feedback_id"}).encode(),
        json.dumps({**valid, "ts": "yesterday"}).encode(),
    ]


def test_oversized_and_malformed_messages_are_dead_lettered_and_good_ones_learned_once(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    rng = random.Random(14)
    shown: list[Decision] = []
    bad: list[bytes] = []
    for round_ in range(4):  # good and bad interleaved, on both topics
        good: list[Event] = []
        for i in range(round_ * 50, round_ * 50 + 50):
            d = decision(i * 0.1, action=i % 4)
            shown.append(d)
            good += [d, feedback(d, "impression", i * 0.1 + 1)]
        values = _bad_values(rng)
        bad += values
        raw_topic = topics.decisions if round_ % 2 else topics.feedback
        publish(kafka_bootstrap, topics, good, raw=values, raw_topic=raw_topic)
    publish(kafka_bootstrap, topics, [decision(1000)])  # closes every window
    sent_good = 2 * len(shown)

    learner = _learner(topics, tmp_path, kafka_bootstrap)
    drive(
        learner,
        lambda: learner.stats.learned >= len(shown) and learner.consumer.dead_lettered >= len(bad),
    )
    learner.checkpoint()  # flushes the dead letters
    learned, joined = learner.stats.learned, learner.joiner.stats.joined
    learner.close()

    letters = dead_letters(kafka_bootstrap, topics, expect=len(bad))
    sent = Counter(hashlib.sha256(v).hexdigest() for v in bad)
    lettered = Counter(x.raw_sha256 or "" for x in letters)
    report_counts(
        "bad-messages",
        good_sent=sent_good,
        bad_sent=len(bad),
        oversized_sent=sum(1 for v in bad if len(v) > 1024 * 1024 // 4),
        learned=learned,
        dead_lettered=len(letters),
        dead_letters_without_reason=sum(1 for x in letters if not x.reason),
        duplicates=sum((lettered - sent).values()) + max(0, learned - len(shown)),
        lost=sum((sent - lettered).values()) + max(0, len(shown) - learned),
    )
    assert learned == joined == len(shown)
    assert lettered == sent  # each bad record once, matched by its digest
    assert all(x.reason and x.raw_size is not None for x in letters)
    by_digest = {x.raw_sha256: x for x in letters}
    for value in bad:
        letter = by_digest[hashlib.sha256(value).hexdigest()]
        assert letter.raw_size == len(value)
        assert base64.b64decode(letter.raw) == value[: len(base64.b64decode(letter.raw))]
    assert any("field `event_id`" in x.reason for x in letters)  # a reason names the field
    assert any("field `kind`" in x.reason for x in letters), [x.reason for x in letters]


def test_duplicated_and_late_feedback_is_learned_once_or_dead_lettered_as_late(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    rng = random.Random(15)
    timeline: list[tuple[float, Event]] = []
    clicked: set[uuid.UUID] = set()
    late: list[Feedback] = []
    copies = 0
    n = 300
    decisions = [decision(i * 0.1, action=i % 4) for i in range(n)]
    for i, d in enumerate(decisions):
        t = i * 0.1
        timeline.append((t, d))
        kinds = ["impression", "click"] if rng.random() < 0.3 else ["impression"]
        for k, kind in enumerate(kinds):
            fb = feedback(d, kind, t + 1 + k)  # type: ignore[arg-type]
            sends = rng.randint(1, 4)  # the same feedback id once to four times
            copies += sends - 1
            timeline += [(t + 1 + k, fb)] * sends
        if "click" in kinds:
            clicked.add(d.event_id)
        if i % 10 == 5:  # after its window, its decision still open (window + lateness)
            fb = feedback(d, "click", t + WINDOW_S + 3, fid=f"late-open-{i}")
            late.append(fb)
            timeline.append((fb.ts.timestamp(), fb))
    timeline.sort(key=lambda e: e[0])
    events = [e for _, e in timeline]
    last = n * 0.1 + WINDOW_S + LATENESS_S
    publish(kafka_bootstrap, topics, [*events, decision(last + 1)])  # closes every window

    learner = _learner(topics, tmp_path, kafka_bootstrap)
    drive(learner, lambda: learner.stats.learned >= n)
    # feedback for decisions whose windows have closed
    after_close = [
        feedback(decisions[i], "click", i * 0.1 + WINDOW_S + 8, fid=f"late-closed-{i}")
        for i in range(0, n, 15)
    ]
    late += after_close
    publish(kafka_bootstrap, topics, list(after_close))
    drive(learner, lambda: learner.joiner.stats.late_feedback >= len(late))
    learner.checkpoint()
    stats, js = learner.stats, learner.joiner.stats
    learner.close()

    letters = dead_letters(kafka_bootstrap, topics, expect=len(late))
    lettered = Counter(
        Feedback.model_validate_json(base64.b64decode(x.raw)).feedback_id for x in letters
    )
    want = Counter(fb.feedback_id for fb in late)
    report_counts(
        "duplicate-and-late-feedback",
        decisions_sent=n,
        feedback_sent=len(events) - n + len(after_close),
        duplicate_copies_sent=copies,
        duplicates_counted=js.duplicate_feedback,
        late_sent=len(late),
        late_dead_lettered=sum(1 for x in letters if x.reason.startswith("late:")),
        learned=stats.learned,
        clicks_rewarded=int(stats.rewards),
        clicks_in_window=len(clicked),
        duplicates=max(0, stats.learned - n) + sum((lettered - want).values()),
        lost=max(0, n - stats.learned) + sum((want - lettered).values()),
    )
    assert stats.learned == js.joined == n
    assert stats.rewards == len(clicked)  # a click counted once; late clicks not at all
    assert js.duplicate_feedback == copies and js.late_feedback == len(late)
    assert lettered == want
    assert all(x.reason.startswith("late:") for x in letters), [x.reason for x in letters]
    reasons = Counter(x.reason.split(",")[0] for x in letters)
    assert reasons["late: its event's reward window has closed"] == len(after_close), reasons
