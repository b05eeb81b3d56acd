"""The promotion gate: a bandit snapshot reaches the rankers only if, on recent logged decisions
it never learned, it is not clearly worse than the snapshot they serve, as Azure Personalizer's
offline evaluation compared a candidate policy with the live one before applying it. A model
that learned something wrong (a broken reward, a poisoned stream) is then kept from the
shoppers instead of being swapped in ten seconds later.

The hold-out is in time, not a share of the events. The live model learns every joined event,
once and in the joiner's order, so the learner's exactly-once guarantee is untouched and nothing
is withheld from learning. A snapshot cut at a checkpoint becomes the *candidate*; the events the
learner learns after that cut are ones the candidate never learned (nor the serving snapshot,
which is older still): they are its hold-out. At a later checkpoint, once ``min_rounds`` of them
have arrived, both policies' values are estimated on the latest ``capacity`` of them by SNIPS
(``bandit.ope``) from the logged propensities, and the candidate is held back when the upper
bound of its interval is below the serving policy's estimate. Either way the snapshot cut at that
checkpoint is the next candidate. The price is a delay: a snapshot reaches the rankers one
judgement after it was cut (a snapshot interval, or as long as ``min_rounds`` events take).

Not taken: a share of events never learned (10 % less learning for good, and a learned count
that no longer equals the joined count that exactly-once is checked by), or held-out events
learned after they were judged (out of the joiner's order, and a checkpoint would have to
carry them until then).

The hold-out lives in memory only. After a crash the learner re-reads from its checkpoint,
which refills it with exactly the events the checkpointed model, the candidate again, has not
learned; an event read twice (after a rewind) counts once, by its id. Which snapshot rankers
serve is kept on disk (``bandit.snapshot.write_serving``), so a restart announces that one and
not a candidate still to be judged."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import numpy as np

from bandit.errors import BanditError, check
from bandit.join import Joined
from bandit.ope import estimate
from bandit.policy import Policy
from bandit.scoring import ActionSet
from bandit.snapshot import (
    load_snapshot,
    read_serving,
    snapshot_path,
    write_serving,
    write_snapshot,
)
from bandit.wire import AnyDecision

log = logging.getLogger(__name__)

#: action sets kept between judgements (a model prepares each once)
_ACTION_SETS_MAX = 4096


@dataclass(frozen=True)
class PromotionConfig:
    """Whether and how snapshots are judged before the rankers get them."""

    #: judge snapshots; False: announce each one as soon as it is cut
    enabled: bool = True
    #: held-out decisions a judgement needs: with fewer the candidate waits for more
    min_rounds: int = 500
    #: the most recent held-out decisions a judgement uses, which bounds its memory and time
    capacity: int = 5000
    #: the candidate's interval covers 1 - alpha
    alpha: float = 0.05

    def __post_init__(self) -> None:
        check(isinstance(self.enabled, bool), "enabled", "True or False", self.enabled)
        check(
            type(self.min_rounds) is int and self.min_rounds >= 2,
            "min_rounds",
            "an integer >= 2",
            self.min_rounds,
        )
        check(
            type(self.capacity) is int and self.capacity >= self.min_rounds,
            "capacity",
            f"an integer >= min_rounds ({self.min_rounds})",
            self.capacity,
        )
        check(0.0 < self.alpha < 1.0, "alpha", "in (0, 1)", self.alpha)


@dataclass(frozen=True)
class Verdict:
    """A candidate's and the serving policy's estimated values on the same held-out decisions."""

    candidate: str
    candidate_learned: int
    serving: str
    rounds: int
    candidate_value: float
    candidate_high: float
    serving_value: float
    alpha: float

    @property
    def promote(self) -> bool:
        """Held back only when clearly worse: the upper bound of its value below the serving
        policy's value (an interval that says nothing, NaN, promotes)."""
        return not self.candidate_high < self.serving_value

    @property
    def reason(self) -> str:
        bound = f"{1 - self.alpha:.0%} upper bound {self.candidate_high:.4f}"
        relation = "not below" if self.promote else "below"
        action = "promoted" if self.promote else "held back"
        return (
            f"snapshot {self.candidate} {action}: its value {self.candidate_value:.4f} "
            f"({bound}) is {relation} the serving {self.serving}'s {self.serving_value:.4f}, "
            f"SNIPS on {self.rounds} decisions it never learned"
        )

    def metrics(self) -> dict[str, float]:
        """The verdict as announcement metrics (free-form numbers; non-finite ones left out)."""
        values = {
            "promotion_held_back": 0.0 if self.promote else 1.0,
            "promotion_rounds": float(self.rounds),
            "promotion_candidate_learned": float(self.candidate_learned),
            "promotion_candidate_value": self.candidate_value,
            "promotion_candidate_high": self.candidate_high,
            "promotion_serving_value": self.serving_value,
        }
        return {k: v for k, v in values.items() if math.isfinite(v)}


def judge(
    candidate: Policy,
    serving: Policy,
    rounds: Sequence[Joined],
    *,
    alpha: float = 0.05,
    action_sets: dict[tuple[str, ...], ActionSet] | None = None,
) -> Verdict:
    """Estimate both policies' values on ``rounds`` (logged decisions and the rewards they
    earned, learned by neither) by SNIPS from the logged propensities; the candidate's with its
    normal interval. ``action_sets`` keeps the logged action sets between calls."""
    if not rounds:
        raise ValueError("`rounds` must hold at least one logged decision")
    sets = {} if action_sets is None else action_sets
    n = len(rounds)
    width = max(len(j.decision.actions) for j in rounds)
    reward = np.fromiter((j.reward for j in rounds), np.float64, n)
    action = np.fromiter((j.decision.action for j in rounds), np.intp, n)
    pscore = np.fromiter((j.decision.pscore for j in rounds), np.float64, n)
    # an action beyond a decision's own set has probability 0 under both policies
    dists = np.zeros((2, n, width))
    for i, j in enumerate(rounds):
        acts = _action_set(sets, j.decision)
        k = len(acts)
        dists[0, i, :k] = candidate.pmf(j.decision.context, acts)
        dists[1, i, :k] = serving.pmf(j.decision.context, acts)
    values = [
        estimate(reward, action, pscore, dist, estimators=("snips",), alpha=alpha)["snips"]
        for dist in dists
    ]
    return Verdict(
        candidate=candidate.version,
        candidate_learned=candidate.learned,
        serving=serving.version,
        rounds=n,
        candidate_value=values[0].value,
        candidate_high=values[0].ci.high,
        serving_value=values[1].value,
        alpha=alpha,
    )


def _action_set(sets: dict[tuple[str, ...], ActionSet], decision: AnyDecision) -> ActionSet:
    """The logged action set, shared by the decisions of one pool (and what models prepared)."""
    key = tuple(decision.actions)
    hit = sets.get(key)
    if hit is None or hit.features != decision.action_features:
        if len(sets) >= _ACTION_SETS_MAX:
            sets.clear()
        hit = sets[key] = ActionSet(list(zip(key, decision.action_features, strict=True)))
    return hit


@dataclass(frozen=True)
class Serving:
    """The snapshot rankers are told to serve: ``path`` None is the untrained policy they hold
    before any snapshot, which is never announced."""

    version: str
    path: Path | None
    learned: int


class PromotionGate:
    """The learner's judge of its snapshots (see the module docstring). The learner calls
    :meth:`resume` at start, :meth:`observe` with the events it is about to learn, and
    :meth:`review` at each checkpoint that cut a new snapshot; it announces :attr:`serving`."""

    def __init__(
        self,
        config: PromotionConfig,
        directory: Path,
        initial: Callable[[], Policy],
        *,
        keep: int = 10,
    ) -> None:
        self.config = config
        self.directory = directory
        self.keep = keep
        self._initial = initial
        self.serving = Serving("init", None, 0)
        #: the serving policy, loaded when a judgement needs it
        self._serving_policy: Policy | None = None
        self._candidate: Policy | None = None
        self._held_out: deque[Joined] = deque(maxlen=config.capacity)
        self._action_sets: dict[tuple[str, ...], ActionSet] = {}
        self.held_back = 0
        self.last: Verdict | None = None

    @property
    def candidate(self) -> str | None:
        """The version waiting for its judgement (None: none)."""
        return None if self._candidate is None else self._candidate.version

    def resume(self, restored: Policy | None) -> None:
        """Take up the serving snapshot the directory records and, when the ``restored``
        checkpoint's model is another one, make that the candidate (without the gate: serve
        it). A directory without a record (written before the gate) serves ``restored``, which
        was announced then."""
        version = read_serving(self.directory)
        if version is not None:
            path = snapshot_path(self.directory, version)
            if path.exists():
                policy = load_snapshot(str(path))
                self.serving = Serving(version, path, policy.learned)
                self._serving_policy = policy if self.config.enabled else None
            else:
                log.warning("serving snapshot %s is missing: judging against the untrained", path)
        elif restored is not None and restored.learned > 0:
            self._promote(restored)
        if restored is None or restored.learned == 0 or restored.version == self.serving.version:
            return
        if self.config.enabled:
            self._take_candidate(restored)
        else:
            self._promote(restored)

    def observe(self, joined: Sequence[Joined]) -> None:
        """Events the live model is about to learn: the candidate's hold-out, as it has not."""
        if self._candidate is not None:
            self._held_out.extend(joined)

    def review(self, live: Policy) -> bool:
        """At a checkpoint that cut ``live``'s snapshot: judge the candidate once enough of its
        hold-out has arrived, then make ``live`` the next candidate. Returns whether to
        announce :attr:`serving` now: newly promoted, or with the verdict of one held back."""
        if not self.config.enabled:
            self._promote(live)
            return True
        announce = False
        if self._candidate is not None:
            rounds = self._rounds()
            if len(rounds) < self.config.min_rounds:
                return False
            candidate, self._candidate = self._candidate, None
            announce = self._judge(candidate, rounds)
        if live.version != self.serving.version:
            self._take_candidate(live)
        return announce

    def metrics(self) -> dict[str, float]:
        """For the announcement: snapshots held back so far and the latest verdict."""
        out = {"held_back": float(self.held_back)}
        if self.last is not None:
            out.update(self.last.metrics())
        return out

    def _judge(self, candidate: Policy, rounds: list[Joined]) -> bool:
        try:
            verdict = self.last = judge(
                candidate,
                self._serving(),
                rounds,
                alpha=self.config.alpha,
                action_sets=self._action_sets,
            )
        except (ValueError, BanditError) as exc:
            # the gate fails open: a judge that cannot judge must not freeze the rankers' model
            log.error("judging snapshot %s failed, promoted unjudged: %s", candidate.version, exc)
            self._promote(candidate, frozen=True)
            return True
        if verdict.promote:
            log.info("%s", verdict.reason)
            self._promote(candidate, frozen=True)
            return True
        self.held_back += 1
        log.warning("%s", verdict.reason)
        return self.serving.path is not None  # re-announced with the verdict in its metrics

    def _rounds(self) -> list[Joined]:
        """The hold-out, an event read twice (after a rewind) once."""
        unique: dict[UUID, Joined] = {}
        for j in self._held_out:
            unique[j.decision.event_id] = j
        return list(unique.values())

    def _serving(self) -> Policy:
        if self._serving_policy is None:
            path = self.serving.path
            self._serving_policy = self._initial() if path is None else load_snapshot(str(path))
        return self._serving_policy

    def _take_candidate(self, policy: Policy) -> None:
        # a copy: the live model learns on, and what it learns next is the copy's hold-out
        self._candidate = Policy.from_bytes(policy.to_bytes())
        self._held_out.clear()

    def _promote(self, policy: Policy, *, frozen: bool = False) -> None:
        """Serve ``policy``; kept for judging only when ``frozen`` (the live model learns on,
        so a judgement loads its snapshot instead)."""
        path = snapshot_path(self.directory, policy.version)
        if not path.exists():  # pruned while it waited for its judgement
            write_snapshot(policy, self.directory, keep=self.keep)
        # recorded before it is announced: a crash in between re-announces it at restart
        write_serving(self.directory, policy.version)
        self.serving = Serving(policy.version, path, policy.learned)
        self._serving_policy = policy if frozen else None
