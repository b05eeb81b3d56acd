"""The closed-loop simulation: catalog → pools (real generator) → shoppers → the policies on the
same shoppers → off-policy check → ``summary.json``, plots and ``report.html``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.progress import Progress

from bandit.policy import PolicyConfig
from bandit.presets import DEFAULT_PRESET, preset, preset_name
from service.errors import SimulationError
from service.finetune.rounds import RoundConfig
from service.simulate import policies
from service.simulate.catalog import make_catalog
from service.simulate.finetune_loop import FinetuneOptions, SimulatedRounds
from service.simulate.kafka_loop import KafkaOptions, run_bandit_kafka
from service.simulate.offpolicy import OffPolicy, evaluate_off_policy
from service.simulate.policies import BanditRun, Trace, run_bandit_inprocess
from service.simulate.pool_source import PoolSource, build_pools
from service.simulate.reference import reference_figures, run_reference
from service.simulate.report import CTR_PLOT, REGRET_PLOT, plot_ctr, plot_regret, write_report
from service.simulate.scenario import Scenario
from service.simulate.summary import build_summary, write_summary
from service.simulate.world import Shoppers, World

Transport = Literal["inprocess", "kafka"]


@dataclass(frozen=True)
class SimulationConfig:
    """How a scenario is run (the scenario says what the world is)."""

    transport: Transport = "inprocess"
    #: the bandit's model and settings (default: the default preset of ``bandit.presets``)
    policy: PolicyConfig = field(default_factory=lambda: preset(DEFAULT_PRESET))
    #: keys the shopper-id hash; simulated shoppers are nobody, so a fixed key is fine
    hash_key: bytes = b"copyloop-simulator"
    #: returning users per segment: a shopper's age and device stay the same across visits
    population: int = 2000
    #: simulated seconds between decisions (sets the event times the reward join sees)
    step_s: float = 1.0
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 8, 4, 0, tzinfo=UTC))
    #: where generated pools are cached (None: not cached)
    cache_dir: Path | None = None
    kafka: KafkaOptions | None = None
    ope: bool = True
    #: also run the informed reference learner (``service.simulate.reference``) as a yardstick
    reference: bool = True
    #: run ``bandit_finetune`` and its control (``bandit_refresh``) when the scenario sets
    #: ``finetune_every`` (in-process transport only)
    finetune: bool = True
    #: where the rounds' registries and candidates go (default: ``OUT/finetune``)
    finetune_dir: Path | None = None
    #: the rounds' settings (None: ``RoundConfig()``); the control refreshes by the same
    #: data and refresh rules and never trains
    finetune_round: RoundConfig | None = None

    def __post_init__(self) -> None:
        if self.transport not in ("inprocess", "kafka"):
            raise SimulationError(
                "transport", f"must be inprocess or kafka, got {self.transport!r}"
            )
        if self.transport == "kafka" and self.kafka is None:
            raise SimulationError("kafka", "options are required with transport kafka")
        if not self.step_s > 0:
            raise SimulationError("step_s", f"must be > 0, got {self.step_s}")
        if self.start.tzinfo is None:
            raise SimulationError("start", "must be timezone-aware")


@dataclass(frozen=True)
class SimulationResult:
    summary: dict[str, Any]
    out_dir: Path
    world: World
    shoppers: Shoppers
    traces: dict[str, Trace]
    bandit: BanditRun
    off_policy: OffPolicy | None


class _Steps:
    """Progress tasks on a rich ``Progress`` (or nothing when there is none)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def task(self, description: str, total: int) -> Callable[[int], None]:
        if self.progress is None:
            return lambda n: None
        task = self.progress.add_task(description, total=total)
        progress = self.progress
        return lambda n: progress.advance(task, n)


def _bandit_note(config: PolicyConfig, bandit: BanditRun) -> str:
    name = preset_name(config)
    which = f"preset {name!r} (bandit.presets)" if name else f"custom {config.name} settings"
    default = " (the default)" if name == DEFAULT_PRESET else ""
    return f"bandit: {which}{default}; learning delay: {bandit.learning.get('delay')}"


def _reference_note(reference: dict[str, Any]) -> str:
    ratio = reference["vs_oracle_last_half"]
    if reference["reaches_bar"]:
        return (
            f"informed reference (segment and click model known): {ratio} x oracle over the "
            "last half; the 0.9 x bar is within reach in this scenario"
        )
    return (
        f"informed reference (segment and click model known): {ratio} x oracle over the last "
        "half, below 0.9 x: even a learner told the segments does not reach the bar, so the "
        "scenario is hard at this many decisions"
    )


def _finetune_skip(scenario: Scenario, cfg: SimulationConfig, source: PoolSource) -> str | None:
    """Why ``bandit_finetune`` does not run here, or None when it does."""
    if scenario.finetune_every <= 0:
        return "bandit_finetune is left out: the scenario sets no finetune_every"
    if not cfg.finetune:
        return "bandit_finetune is left out: fine-tuning was turned off for this run"
    if cfg.transport != "inprocess":
        return "bandit_finetune is left out: fine-tune rounds run with the in-process transport"
    if getattr(source, "model_folder", None) is None:
        return "bandit_finetune is left out: the pools do not come from a model folder"
    return None


def _finetune_summary(summary: dict[str, Any]) -> str:
    rounds = summary["finetune_rounds"]
    promoted = sum(1 for r in rounds if r.get("promoted"))
    ratios = summary.get("ratios", {})
    return (
        f"bandit_finetune: {len(rounds)} rounds, {promoted} promoted; true CTR over the last "
        f"half x{ratios.get('true_finetune_vs_bandit_last_half')} of bandit's, "
        f"x{ratios.get('true_finetune_vs_refresh_last_half')} of bandit_refresh's (the same "
        "pool refresh from the untrained generator)"
    )


def simulate(
    scenario: Scenario,
    out_dir: Path,
    *,
    source: PoolSource,
    config: SimulationConfig | None = None,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run ``scenario`` and write ``summary.json``, the plots and ``report.html`` to ``out_dir``."""
    cfg = config if config is not None else SimulationConfig()
    steps = _Steps(progress)
    began = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(scenario.products, int):
        products = make_catalog(scenario.products, scenario.language, scenario.seed)
    else:
        products = list(scenario.products)
    pools = build_pools(
        source,
        products,
        channel=scenario.channel,
        n=scenario.pool_size,
        seed=scenario.seed,
        today=scenario.copy_date,
        cache_dir=cfg.cache_dir,
        advance=steps.task("generating pools", len(products)),
    )
    timings = {"pools_s": time.perf_counter() - began}
    world = World.build(scenario, products, pools)
    mark = time.perf_counter()
    shoppers = Shoppers.draw(
        scenario,
        world,
        hash_key=cfg.hash_key,
        start=cfg.start,
        step_s=cfg.step_s,
        population=cfg.population,
        seed=scenario.seed,
    )
    timings["shoppers_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    advance = steps.task(f"bandit ({cfg.transport})", shoppers.n)
    if cfg.kafka is not None and cfg.transport == "kafka":
        bandit = run_bandit_kafka(
            world, shoppers, config=cfg.policy, seed=scenario.seed, channel=scenario.channel,
            options=cfg.kafka, advance=advance,
        )  # fmt: skip
    else:
        bandit = run_bandit_inprocess(
            world, shoppers, config=cfg.policy, seed=scenario.seed, channel=scenario.channel,
            advance=advance,
        )  # fmt: skip
    timings["bandit_s"] = time.perf_counter() - mark
    traces = {
        "uniform": policies.uniform(world, shoppers),
        "best_fixed": policies.best_fixed(world, shoppers, scenario.weights),
        "bandit": bandit.trace,
        "oracle": policies.oracle(world, shoppers),
    }
    rounds: dict[str, list[dict[str, Any]]] = {}
    finetune_note = _finetune_skip(scenario, cfg, source)
    if finetune_note is None:
        mark = time.perf_counter()
        base = getattr(source, "model_folder")  # noqa: B009 - checked by _finetune_skip
        work = cfg.finetune_dir or out_dir / "finetune"
        for name, train in (("bandit_finetune", True), ("bandit_refresh", False)):
            hook = SimulatedRounds(
                scenario,
                products,
                FinetuneOptions(
                    base,
                    work,
                    scenario.copy_date,
                    train=train,
                    round=cfg.finetune_round or RoundConfig(),
                ),
            )
            run = run_bandit_inprocess(
                world, shoppers, config=cfg.policy, seed=scenario.seed, channel=scenario.channel,
                advance=steps.task(name, shoppers.n), every=scenario.finetune_every,
                between=hook,
            )  # fmt: skip
            traces[name] = run.trace
            rounds[name] = hook.rounds
        timings["finetune_s"] = time.perf_counter() - mark
    reference: dict[str, Any] | None = None
    if cfg.reference:
        mark = time.perf_counter()
        ref = run_reference(
            world, shoppers, seed=scenario.seed,
            advance=steps.task("informed reference", shoppers.n),
        )  # fmt: skip
        reference = reference_figures(ref, traces["oracle"])
        timings["reference_s"] = time.perf_counter() - mark
    off_policy = None
    if cfg.ope:
        mark = time.perf_counter()
        # the uniform policy's log with its own click draws (see ``Shoppers.u_log``)
        log = policies.uniform(world, shoppers, u=shoppers.u_log)
        off_policy = evaluate_off_policy(
            bandit.policy, world, shoppers, log, seed=scenario.seed,
            advance=steps.task("off-policy evaluation", shoppers.n),
        )  # fmt: skip
        timings["ope_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - began
    pool_info: dict[str, Any] = {
        "products": len(products),
        "variants": int(world.sizes.sum()),
        "generator_version": sorted({p.generator_version for p in pools}),
    }
    sampled = int(getattr(source, "sampled", 0))
    if sampled:  # zero when every pool came from the cache
        pool_info["candidates_sampled"] = sampled
        pool_info["guardrail_pass_rate"] = round(int(getattr(source, "passed", 0)) / sampled, 4)
    summary = build_summary(
        scenario,
        traces,
        off_policy,
        extra={
            "seed": scenario.seed,
            "transport": cfg.transport,
            "bandit": {
                "preset": preset_name(cfg.policy),
                "config": cfg.policy.to_dict(),
                **bandit.learning,
            },
            "pools": pool_info,
            "timings": {k: round(v, 3) for k, v in timings.items()},
        },
    )
    summary["notes"].append(_bandit_note(cfg.policy, bandit))
    if finetune_note is not None:
        summary["notes"].append(finetune_note)
    else:
        summary["finetune_rounds"] = rounds["bandit_finetune"]
        summary["refresh_rounds"] = rounds["bandit_refresh"]
        summary["notes"].append(_finetune_summary(summary))
    if reference is not None:
        summary["reference"] = reference
        summary.setdefault("ratios", {})["reference_vs_oracle_last_half"] = reference[
            "vs_oracle_last_half"
        ]
        summary["notes"].append(_reference_note(reference))
    write_summary(summary, out_dir)
    marks = [r["at_decision"] for r in rounds.get("bandit_finetune", [])]
    plots = [
        plot_ctr(traces, out_dir / CTR_PLOT, rounds=marks),
        plot_regret(traces, out_dir / REGRET_PLOT),
    ]
    write_report(summary, world, plots, out_dir)
    return SimulationResult(summary, out_dir, world, shoppers, traces, bandit, off_policy)
