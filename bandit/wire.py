"""The msgspec mirror of ``streams.schemas.Decision``: the one place its constraints are
restated for msgspec, in two views of the same fields.

- :class:`WireDecision`, the learner's decisions-topic model. Validating a logged ``Decision``
  (8 actions, ~1.5 kB of JSON) with pydantic costs several times more than learning it in VW,
  so its ``model_validate_json`` checks a message with msgspec against the same constraints
  (types, bounds, patterns, then the cross-field rules of ``Decision``) and returns a
  :class:`LoggedDecision`: the same fields as a frozen msgspec struct, which the learner holds
  for a whole reward window (a pydantic event keeps its fields in a dict: building one cost
  more than the decoding, and held, a third more memory). Any message msgspec does not accept
  as is goes through pydantic itself, so the values, and the error naming the field for a dead
  letter, are exactly pydantic's; msgspec only ever takes the fast path for what pydantic would
  accept unchanged. Tests hold the two paths equal. ``LoggedDecision.event()`` gives the
  pydantic event back where one is written out (a dead letter). A decision's pool part
  (``actions`` and ``action_features``, two thirds of its bytes) is the same text in every
  decision of a pool: it is validated once per distinct text and its decoded lists are shared
  after that; so is its ``action_dist`` (a logging policy gives many decisions the same few
  distributions).
- :class:`WireFeedback`, the same for the feedback topic (to a :class:`LoggedFeedback`):
  pydantic costs ~40x msgspec on a feedback line, and the learner reads about one per decision.
- ``AnyDecision`` and ``AnyFeedback``: what the joiner, the policy and the loop's figures take,
  either kind (the simulator and replay hand them pydantic events).
- :class:`DecisionRow`, what ``copyloop replay`` reads of a logged decision: the few fields it
  needs, the rest of the line skipped unparsed (a whole decision decodes ~7x slower, and replay
  has a budget of 200,000 events/s).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from sys import intern
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeAlias, TypeVar
from uuid import UUID

import msgspec
from pydantic import BaseModel

from streams.schemas import (
    IDENTIFIER_MAX_LENGTH,
    IDENTIFIER_RE,
    ActionFeatures,
    Channel,
    Decision,
    Event,
    FeatureValue,
    Feedback,
    FeedbackKind,
)

#: the most actions a decision holds
MAX_ACTIONS = 256
_Id = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_RE.pattern),
]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
#: an event id read as text, for readers that check UUIDs on whole arrays (msgspec's own UUID
#: type costs more than the rest of a feedback line)
EventIdText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Version = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Value = str | int | float | bool | list[str]
_Action = Annotated[int, msgspec.Meta(ge=0)]
_Pscore = Annotated[float, msgspec.Meta(gt=0, le=1)]
_ActionDist = Annotated[list[float], msgspec.Meta(min_length=1, max_length=MAX_ACTIONS)]
#: the same, each entry checked >= 0 by msgspec (a NaN fails it)
_Probabilities = Annotated[
    list[Annotated[float, msgspec.Meta(ge=0)]], msgspec.Meta(min_length=1, max_length=MAX_ACTIONS)
]


class _Features(msgspec.Struct, frozen=True, gc=False):
    language: Literal["zh", "en"]
    length_bucket: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    generator_version: _Version
    traits: tuple[str, ...] = ()  # a tuple, so the struct hashes as a cache key


class DecisionRow(msgspec.Struct, gc=False):
    """What replay reads of a ``Decision``; unknown and unneeded fields are skipped."""

    event_id: EventIdText
    ts: AwareTime
    #: kept as raw JSON: a log repeats a few pools many times, each is decoded once
    actions: msgspec.Raw
    action: _Action
    action_dist: _ActionDist
    #: optional here so that a log without it can still be replayed, with a warning
    pscore: _Pscore | None = None
    schema_version: Literal[1] = 1

    @classmethod
    def of(cls, d: Decision) -> DecisionRow:
        return cls(
            str(d.event_id),
            d.ts,
            msgspec.Raw(msgspec.json.encode(d.actions)),
            d.action,
            d.action_dist,
            d.pscore,
        )


#: an identifier's length checked by msgspec, its characters by :func:`_known_id`
_IdText = Annotated[str, msgspec.Meta(min_length=1, max_length=IDENTIFIER_MAX_LENGTH)]


class _Lean(msgspec.Struct, gc=False):
    """``Decision`` for msgspec, its pool part left as raw JSON (checked once per distinct
    text by :func:`_pool`)."""

    event_id: UUID
    product_id: _IdText
    channel: Literal["ad_headline", "product_desc", "push", "social"]
    pool_version: Annotated[int, msgspec.Meta(ge=1)]
    policy_version: _Version
    actions: msgspec.Raw
    action_features: msgspec.Raw
    action: _Action
    pscore: _Pscore
    action_dist: msgspec.Raw
    ts: AwareTime | msgspec.UnsetType = msgspec.UNSET
    context: Annotated[dict[str, _Value], msgspec.Meta(max_length=256)] = {}
    schema_version: Literal[1] = 1


_LEAN = msgspec.json.Decoder(_Lean)
_DIST = msgspec.json.Decoder(_Probabilities)
#: a distribution's JSON -> its decoded list (None: not valid as is)
_DISTS: dict[bytes, list[float] | None] = {}
_DISTS_MAX = 20_000
_ACTIONS = msgspec.json.Decoder(
    Annotated[list[_Id], msgspec.Meta(min_length=1, max_length=MAX_ACTIONS)]
)
_ACTION_FEATURES = msgspec.json.Decoder(
    Annotated[list[_Features], msgspec.Meta(min_length=1, max_length=MAX_ACTIONS)]
)
_FEATURES: dict[_Features, ActionFeatures] = {}
_FEATURES_MAX = 100_000
#: a pool's (actions, action_features) JSON -> its decoded lists (None: not valid as is)
_POOLS: dict[tuple[bytes, bytes], tuple[list[str], list[ActionFeatures]] | None] = {}
_POOLS_MAX = 10_000
#: the pool text and result :func:`_pool` last returned
_LAST_POOL: list[Any] = []
_MISSING = object()


#: per model: the set of all its field names, shared by the instances :func:`assemble` builds
_FIELDS_SET: dict[type[Any], set[str]] = {}
_new = object.__new__
_set_dict = vars(BaseModel)["__dict__"].__set__
_set_fields_set = vars(BaseModel)["__pydantic_fields_set__"].__set__
_set_extra = vars(BaseModel)["__pydantic_extra__"].__set__
_set_private = vars(BaseModel)["__pydantic_private__"].__set__


def assemble(cls: type[Any], values: dict[str, Any]) -> Any:
    """A pydantic instance from values already checked against its schema (what
    ``model_construct`` does, without its per-field bookkeeping): every field given, none
    extra. Used where validating again would cost more than the work around it.

    Every instance of ``cls`` built here shares one set of set fields (all of them): a set of
    13 names is a third of a held decision's memory. The models are frozen, and pydantic copies
    the set before changing it (``model_copy``), so sharing it changes nothing they report.
    The four slots are filled through their descriptors (half the cost of
    ``object.__setattr__``, which looks each name up first)."""
    obj = _new(cls)
    _set_dict(obj, values)
    fields = _FIELDS_SET.get(cls)
    if fields is None or len(fields) != len(values):
        fields = set(values)
        if fields == set(cls.model_fields):
            _FIELDS_SET[cls] = fields
    _set_fields_set(obj, fields)
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


def _features(f: _Features) -> ActionFeatures:
    hit = _FEATURES.get(f)
    if hit is None:
        if len(_FEATURES) >= _FEATURES_MAX:
            _FEATURES.clear()
        # a pool's features repeat in every decision; frozen, so one instance can be shared
        hit = _FEATURES[f] = assemble(
            ActionFeatures,
            {
                "traits": list(f.traits),
                "language": f.language,
                "length_bucket": f.length_bucket,
                "generator_version": f.generator_version,
            },
        )
    return hit


def _pool(
    actions: msgspec.Raw, features: msgspec.Raw
) -> tuple[list[str], list[ActionFeatures]] | None:
    """The decoded pool part of a decision, validated on first sight of its text."""
    last = _LAST_POOL
    # a poll's decisions mostly share one pool: comparing its text costs less than hashing it
    if last and actions == last[0] and features == last[1]:
        return last[2]
    key = (bytes(actions), bytes(features))
    hit = _POOLS.get(key, _MISSING)
    if hit is _MISSING:
        hit = _remember(_POOLS, _POOLS_MAX, key, _decode_pool)
    _LAST_POOL[:] = (actions, features, hit)
    return hit  # type: ignore[return-value]


def _decode_pool(key: tuple[bytes, bytes]) -> tuple[list[str], list[ActionFeatures]] | None:
    ids = [intern(a) for a in _ACTIONS.decode(key[0])]
    feats = [_features(f) for f in _ACTION_FEATURES.decode(key[1])]
    return (ids, feats) if len(feats) == len(ids) else None


def _remember(cache: dict[Any, Any], limit: int, key: Any, check: Callable[[Any], Any]) -> Any:
    """``check(key)`` (None where msgspec rejects it), kept in ``cache`` (cleared once it holds
    ``limit`` entries): for the parts of a decision that repeat, checked on first sight."""
    try:
        hit = check(key)
    except (msgspec.ValidationError, msgspec.DecodeError):
        hit = None
    if len(cache) >= limit:
        cache.clear()
    cache[key] = hit
    return hit


#: product ids seen to match ``IDENTIFIER_RE`` (a shop has thousands; a regex per decision
#: costs a tenth of its decoding)
_IDS: set[str] = set()
_IDS_MAX = 100_000


def _known_id(value: str) -> bool:
    if value in _IDS:
        return True
    if IDENTIFIER_RE.match(value) is None:
        return False
    if len(_IDS) >= _IDS_MAX:
        _IDS.clear()
    _IDS.add(value)
    return True


#: context strings seen, shared by the decisions that hold them (see WireDecision)
_SHARED: dict[str, str] = {}
_SHARED_MAX = 200_000


def _utc(ts: datetime | msgspec.UnsetType) -> datetime:
    """An event's time in UTC; now when it has none."""
    if ts is msgspec.UNSET:
        return datetime.now(UTC)
    return ts if ts.tzinfo is UTC else ts.astimezone(UTC)


def _dist(raw: msgspec.Raw) -> list[float] | None:
    """A decision's action probabilities, decoded and checked on first sight of their text:
    a logging policy gives the same few distributions to many decisions, which then share
    one list (nothing downstream changes it)."""
    key = bytes(raw)
    hit = _DISTS.get(key, _MISSING)
    if hit is _MISSING:
        hit = _remember(_DISTS, _DISTS_MAX, key, _DIST.decode)
    return hit  # type: ignore[return-value]


def _consistent(d: _Lean, dist: list[float], n: int) -> bool:
    """``Decision``'s cross-field rules (streams.schemas) for ``n`` actions, checked on the
    fast path (msgspec has checked each probability >= 0)."""
    # a sum within 1e-4 of 1 is finite, so every entry is (an inf or a NaN would carry into it)
    return (
        len(dist) == n
        and d.action < n
        and abs(sum(dist) - 1.0) <= 1e-4
        and abs(dist[d.action] - d.pscore) <= 1e-6
    )


_E = TypeVar("_E", Decision, Feedback)


class _Logged(msgspec.Struct, Generic[_E], frozen=True, gc=False):
    """An event as the learner reads and holds it: the contract's fields, in its order,
    checked as its model checks them (built by the wire models here only)."""

    _model: ClassVar[type[BaseModel]]

    @classmethod
    def of(cls, event: _E) -> Self:
        return cls(**vars(event))

    def event(self) -> _E:
        """The pydantic event (its values already checked)."""
        built: _E = assemble(self._model, msgspec.structs.asdict(self))
        return built


class LoggedDecision(_Logged[Decision], frozen=True, gc=False):
    """A logged :class:`Decision` (see :class:`WireDecision`)."""

    _model = Decision
    schema_version: Literal[1]
    event_id: UUID
    ts: datetime
    product_id: str
    channel: Channel
    pool_version: int
    policy_version: str
    context: dict[str, FeatureValue]
    actions: list[str]
    action_features: list[ActionFeatures]
    action: int
    pscore: float
    action_dist: list[float]


class LoggedFeedback(_Logged[Feedback], frozen=True, gc=False):
    """A :class:`Feedback` (see :class:`WireFeedback`)."""

    _model = Feedback
    schema_version: Literal[1]
    feedback_id: str
    event_id: UUID
    ts: datetime
    kind: FeedbackKind
    value: float | None


AnyDecision: TypeAlias = Decision | LoggedDecision
AnyFeedback: TypeAlias = Feedback | LoggedFeedback


def as_event(event: LoggedDecision | LoggedFeedback | Event) -> Event:
    """The pydantic event of a logged one; any other event as it is."""
    return event.event() if isinstance(event, _Logged) else event


class WireDecision(Decision):
    """The decisions topic's model for the learner; decodes to a :class:`LoggedDecision`."""

    @classmethod
    def model_validate_json(  # type: ignore[override]
        cls, json_data: str | bytes | bytearray, **kwargs: Any
    ) -> LoggedDecision:
        try:
            d = _LEAN.decode(json_data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            d = None
        pool = None if d is None else _pool(d.actions, d.action_features)
        dist = None if d is None or pool is None else _dist(d.action_dist)
        if (
            d is None
            or pool is None
            or dist is None
            or not _consistent(d, dist, len(pool[0]))
            or not _known_id(d.product_id)
        ):
            return LoggedDecision.of(Decision.model_validate_json(json_data, **kwargs))
        context = d.context
        # pending decisions wait a whole reward window in the learner: strings that repeat
        # across them (buckets, variant ids) are shared, a third of the memory. A dict of its
        # own rather than sys.intern: a lookup costs half as much as interning
        shared = _SHARED
        if len(shared) >= _SHARED_MAX:
            shared.clear()
        get = shared.get
        for k, v in context.items():
            if type(v) is str:
                s = get(v)
                if s is None:
                    shared[v] = v
                else:
                    context[k] = s
        # a pool's lists are shared by its decisions: nothing downstream changes them
        return LoggedDecision(
            1,
            d.event_id,
            _utc(d.ts),
            d.product_id,
            d.channel,
            d.pool_version,
            d.policy_version,
            context,
            pool[0],
            pool[1],
            d.action,
            d.pscore,
            dist,
        )


class _Feedback(msgspec.Struct, gc=False):
    #: its characters checked by ``IDENTIFIER_RE`` directly: msgspec's own pattern check costs
    #: twice the match (a third of a feedback's decoding)
    feedback_id: _IdText
    event_id: UUID
    kind: Literal["impression", "click", "add_to_cart", "purchase"]
    ts: AwareTime | msgspec.UnsetType = msgspec.UNSET
    value: Annotated[float, msgspec.Meta(ge=0, lt=1e9)] | None = None
    schema_version: Literal[1] = 1


_FEEDBACK = msgspec.json.Decoder(_Feedback)
_match_id = IDENTIFIER_RE.match


class WireFeedback(Feedback):
    """The feedback topic's model for the learner; decodes to a :class:`LoggedFeedback`, by
    msgspec when it accepts the message as is, else by pydantic (see the module)."""

    @classmethod
    def model_validate_json(  # type: ignore[override]
        cls, json_data: str | bytes | bytearray, **kwargs: Any
    ) -> LoggedFeedback:
        try:
            f = _FEEDBACK.decode(json_data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            f = None
        if f is None or _match_id(f.feedback_id) is None:
            return LoggedFeedback.of(Feedback.model_validate_json(json_data, **kwargs))
        return LoggedFeedback(1, f.feedback_id, f.event_id, _utc(f.ts), f.kind, f.value)


# serde names the model in a dead letter's reason ("invalid Decision: field `x` ..."); the
# reason should name the event, not this decoder
WireDecision.__name__ = "Decision"
WireFeedback.__name__ = "Feedback"
