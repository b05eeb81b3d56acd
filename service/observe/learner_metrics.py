"""The learner's metrics, read at scrape time from what the learner already keeps: its stats,
the joiner's outcomes, the consumer's lag, the snapshot it serves and the loop-wide counts
(``bandit.loop_stats.LoopCounts``: per product x variant, per segment x trait).

Nothing is added to the learner's loop: the collector runs on the metrics server's thread and
copies what it reads (a dict copy is atomic under the GIL; counts may be a step stale). The
learner's own counters start at zero with each process (Prometheus' ``rate`` takes the reset);
the loop-wide counts are saved with the learner's checkpoints and keep counting across
restarts."""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bandit.learner import Learner
from bandit.loop_stats import LoopCounts
from service.observe.bounded import OTHER, BoundedLabels, ProductVariantLabels

#: the loop-wide totals exported, as ``copyloop_loop_events_total{kind}``
_LOOP_TOTALS = ("decisions", "explored", "impressions", "clicks", "purchases", "joined")
#: segment x trait cells named in labels (segments are age x gender, traits a fixed list)
_MAX_SEGMENTS = 400


class LearnerCollector(Collector):
    """Every learner figure of ``docs/metrics.md``; ``counts`` is the learner observer's
    loop-wide counts (None: not kept, those metrics are left out)."""

    def __init__(self, learner: Learner, counts: LoopCounts | None = None) -> None:
        self.learner = learner
        self.counts = counts
        self._variant_labels = ProductVariantLabels()
        self._segment_labels = BoundedLabels(_MAX_SEGMENTS)

    def collect(self) -> Iterator[Metric]:
        yield from self._learner()
        yield from self._join()
        yield from self._model()
        if self.counts is not None:
            yield from self._loop(self.counts)

    def _learner(self) -> Iterator[Metric]:
        lr = self.learner
        s = lr.stats
        yield GaugeMetricFamily(
            "copyloop_learned_events", "events the model has learned, in total", lr.policy.learned
        )
        for name, doc, value in (
            ("copyloop_learner_records", "records read from decisions and feedback", s.records),
            ("copyloop_learner_checkpoints", "checkpoints written", s.checkpoints),
            ("copyloop_model_announcements", "snapshot announcements sent", s.announcements),
            ("copyloop_snapshots_held_back", "snapshots the promotion gate held", s.held_back),
            ("copyloop_learner_errors", "steps that failed on the broker and retried", s.errors),
            ("copyloop_rewards", "rewards of the joined events, summed", s.rewards),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        letters = CounterMetricFamily(
            "copyloop_dead_letters",
            "messages sent to the dead-letter topic, by reason",
            labels=["reason"],
        )
        letters.add_metric(["invalid"], lr.consumer.dead_lettered)
        for reason, n in sorted(dict(s.dead_letter_reasons).items()):
            letters.add_metric([reason], n)
        yield letters
        lag = GaugeMetricFamily(
            "copyloop_consumer_lag",
            "records not yet read by the learner, per partition",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(lr.partition_lag().items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag

    def _join(self) -> Iterator[Metric]:
        joiner = self.learner.joiner
        js = joiner.stats
        outcomes = CounterMetricFamily(
            "copyloop_join_outcomes",
            "decisions and feedback by what the reward join made of them",
            labels=["outcome"],
        )
        for outcome, value in (
            ("joined", js.joined),
            ("unseen", js.unseen),
            ("late", js.late_feedback),
            ("unknown", js.unknown_feedback),
            ("duplicate", js.duplicate_feedback),
            ("overflow", js.overflow_decisions),
        ):
            outcomes.add_metric([outcome], value)
        yield outcomes
        yield GaugeMetricFamily(
            "copyloop_join_pending", "decisions waiting for their reward window", joiner.pending
        )

    def _model(self) -> Iterator[Metric]:
        serving = self.learner.gate.serving
        info = GaugeMetricFamily(
            "copyloop_model_info",
            "1 for the model version rankers are told to serve",
            labels=["kind", "version"],
        )
        info.add_metric(["bandit", serving.version], 1)
        yield info
        age = GaugeMetricFamily(
            "copyloop_model_snapshot_age_seconds",
            "seconds since the served snapshot was written",
            labels=["kind"],
        )
        if serving.path is not None:
            # pruned or not yet written: no sample rather than a wrong one
            with contextlib.suppress(OSError):
                age.add_metric(["bandit"], max(0.0, time.time() - os.stat(serving.path).st_mtime))
        yield age

    def _loop(self, counts: LoopCounts) -> Iterator[Metric]:
        totals = dict(counts.totals)
        loop = CounterMetricFamily(
            "copyloop_loop_events",
            "loop-wide counts over every ranker: decisions, explored, impressions, clicks, "
            "purchases (a click or purchase once its impression is known), joined rewards",
            labels=["kind"],
        )
        for kind in _LOOP_TOTALS:
            loop.add_metric([kind], totals.get(kind, 0))
        yield loop
        per_variant: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for (product, variant), c in dict(counts.variants).items():
            row = per_variant[self._variant_labels.labels(product, variant)]
            for i in range(4):
                row[i] += c[i]
        names = ("decisions", "impressions", "clicks", "purchases")
        families = [
            CounterMetricFamily(
                f"copyloop_variant_{name}",
                f"{name} per product and variant (products past the cap under `other`)",
                labels=["product", "variant"],
            )
            for name in names
        ]
        for key, row in sorted(per_variant.items()):
            for family, value in zip(families, row, strict=True):
                family.add_metric(list(key), value)
        yield from families
        cells: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for (segment, trait), sums in dict(counts.segments).items():
            named = self._segment_labels.label(f"{segment}|{trait}") != OTHER
            cell = cells[(segment, trait) if named else (OTHER, OTHER)]
            for i in range(3):
                cell[i] += sums[i]
        shown, clicks, rewards = (
            CounterMetricFamily(
                f"copyloop_segment_trait_{name}",
                f"joined rewards per shopper segment and trait of the shown copy: {doc}",
                labels=["segment", "trait"],
            )
            for name, doc in (
                ("shown", "events shown"),
                ("clicks", "events clicked"),
                ("reward", "reward summed"),
            )
        )
        for key, (n, k, r) in sorted(cells.items()):
            shown.add_metric(list(key), n)
            clicks.add_metric(list(key), k)
            rewards.add_metric(list(key), r)
        yield from (shown, clicks, rewards)


def learner_registry(learner: Learner, counts: LoopCounts | None = None) -> CollectorRegistry:
    """A registry holding the learner's collector (served by ``service.observe.scrape.serve``)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LearnerCollector(learner, counts))
    return registry
