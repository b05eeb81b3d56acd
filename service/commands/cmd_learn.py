"""``copyloop learn``: the learner process (decisions ⨝ feedback → the bandit's model → checkpoint
→ announce), with the model a named preset gives (``bandit.presets``; default the validated one).

Stops cleanly on SIGTERM or Ctrl-C: it finishes the current batch, writes a checkpoint and
exits. A SIGKILL loses nothing either: the next start resumes from the last checkpoint. One
learner per data dir: while one runs, another on the same ``COPYLOOP_DATA_DIR`` exits with status
2 and says which process holds it (``bandit.learner.LearnerLocked``). With model shards
(``COPYLOOP_LEARNER_SHARDS``) that is one learner per data dir and shard
(``COPYLOOP_LEARNER_SHARD``): each shard learns only its own partitions (``streams.shards``)."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from types import FrameType
from wsgiref.simple_server import WSGIServer

import typer
from rich.console import Console

from bandit.errors import BanditError, ConfigError
from bandit.learner import Learner, LearnerConfig
from bandit.loop_stats import STATS_FILE, LoopCounts, StatsPublisher
from bandit.policy import PolicyConfig
from bandit.presets import DEFAULT_PRESET, PRESETS, preset
from bandit.promotion import PromotionConfig
from bandit.reward import RewardConfig
from service.observe import scrape
from service.observe.learner_metrics import learner_registry
from service.settings import Settings
from streams.errors import StreamsError
from streams.topics import TopicAdmin

console = Console(stderr=True)


#: what ``--model`` (kept for older scripts) meant before presets: its preset
_MODEL_PRESETS = {"vw": "vw-squarecb", "refit": "refit"}


def learner_policy(
    preset_name: str | None,
    model: str | None = None,
    exploration: str | None = None,
    epsilon: float | None = None,
) -> PolicyConfig:
    """The learner's settings from its options: the preset (default the validated one), or the
    one ``--model`` stands for, with ``--exploration`` / ``--epsilon`` applied to its model.
    Raises :class:`ConfigError` naming the option."""
    if model is not None:
        if preset_name is not None:
            raise ConfigError("`--model` and `--preset` both given: `--preset` alone is enough")
        if model not in _MODEL_PRESETS:
            raise ConfigError(f"`--model` must be vw or refit, got {model!r}")
        preset_name = _MODEL_PRESETS[model]
        console.print(f"note: --model {model} is the preset {preset_name!r} (prefer --preset)")
    config = preset(DEFAULT_PRESET if preset_name is None else preset_name)
    overrides = {
        k: v for k, v in (("exploration", exploration), ("epsilon", epsilon)) if v is not None
    }
    if not overrides:
        return config
    known = {f.name for f in dataclasses.fields(config.model)}
    for option in overrides:
        if option not in known:
            raise ConfigError(f"`--{option}` does not apply to the {config.name} model")
    return PolicyConfig(dataclasses.replace(config.model, **overrides))  # type: ignore[arg-type]


def learn(
    preset_name: str | None = typer.Option(
        None,
        "--preset",
        help=f"the bandit's settings, one of {', '.join(PRESETS)} (default: "
        f"$COPYLOOP_BANDIT_PRESET, else {DEFAULT_PRESET})",
    ),
    exploration: str | None = typer.Option(
        None, help="VW presets: override the exploration (squarecb, epsilon, bag, cover, softmax)"
    ),
    epsilon: float | None = typer.Option(None, help="override the preset's exploration floor"),
    model: str | None = typer.Option(
        None, help="older spelling of --preset: vw (vw-squarecb) or refit"
    ),
    seed: int = typer.Option(0, help="seed of the model's draws and VW's randomness"),
    lateness: float = typer.Option(60.0, help="event-time slack (s) before a window closes"),
    idle_close: bool = typer.Option(
        True, help="close windows by the wall clock when no events arrive"
    ),
    max_seconds: float = typer.Option(0.0, help="stop after this long (0: run until stopped)"),
    promotion_gate: bool | None = typer.Option(
        None,
        "--promotion-gate/--no-promotion-gate",
        help="hold back a snapshot clearly worse than the serving one on decisions it never "
        "learned (default: $COPYLOOP_PROMOTION_GATE, else on)",
    ),
    metrics_port: int | None = typer.Option(
        None,
        min=0,
        max=65535,
        help="serve /metrics on this port (default: $COPYLOOP_LEARNER_METRICS_PORT, else "
        "9464; 0: not at all)",
    ),
    metrics_host: str = typer.Option("127.0.0.1", help="address /metrics listens on"),
) -> None:
    """Consume decisions and feedback, learn the bandit, checkpoint and announce snapshots."""
    settings = Settings()
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # the learner's own notes; the Kafka client's connection chatter only when it goes wrong
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("bandit").setLevel(logging.INFO)
    try:
        config = LearnerConfig(
            topics=settings.topics,
            data_dir=settings.data_dir,
            reward=RewardConfig(window_s=settings.reward_window_s),
            policy=learner_policy(
                preset_name if model is not None else preset_name or settings.bandit_preset,
                model,
                exploration,
                epsilon,
            ),
            seed=seed,
            snapshot_every_s=settings.snapshot_every_s,
            lateness_s=lateness,
            idle_close=idle_close,
            promotion=PromotionConfig(
                enabled=settings.promotion_gate if promotion_gate is None else promotion_gate
            ),
            shard=settings.learner_shard,
            shards=settings.learner_shards,
            kafka_client=settings.learner_kafka_client,
            feedback_lead_s=settings.learner_feedback_lead_s,
        )
        admin = TopicAdmin(settings.kafka_bootstrap)
        admin.ensure(settings.topics, partitions=settings.topic_partitions)
        admin.close()
        learner = Learner.connect(config, settings.kafka_bootstrap)
        # the loop-wide figures every ranker's dashboard shows (copyloop.stats)
        stats_path = config.checkpoint_path.with_name(STATS_FILE)
        learner.observer = StatsPublisher(
            LoopCounts.load(stats_path),
            learner.sink,
            settings.topics.stats,
            stats_path,
            every_s=min(5.0, settings.snapshot_every_s),
        )
        learner.start()
    except (BanditError, StreamsError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    metrics_server = serve_learner_metrics(
        learner,
        settings.learner_metrics_port if metrics_port is None else metrics_port,
        metrics_host,
    )
    shard = (
        f" as shard {settings.learner_shard} of {settings.learner_shards}"
        if settings.learner_shards > 1
        else ""
    )
    console.print(
        f"learning from {settings.topics.decisions} + {settings.topics.feedback}{shard} "
        f"(resumed at {learner.stats.learned} learned events, model {learner.policy.version})"
    )
    deadline = time.monotonic() + max_seconds if max_seconds > 0 else None

    def should_stop() -> bool:
        return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    with console.status("learning") as status:

        def progress(lr: Learner) -> None:
            js = lr.joiner.stats
            status.update(
                f"learned {lr.stats.learned} · pending {lr.joiner.pending} · "
                f"dead letters {lr.stats.dead_lettered} · duplicates {js.duplicate_feedback} · "
                f"model {lr.policy.version}"
            )

        try:
            stats = learner.run(should_stop, on_progress=progress)
        except (BanditError, StreamsError) as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from exc
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
    console.print(
        f"stopped: {stats.learned} learned events, {stats.checkpoints} checkpoints, "
        f"{stats.announcements} announcements, {stats.held_back} snapshots held back"
    )


def serve_learner_metrics(learner: Learner, port: int, host: str) -> WSGIServer | None:
    """The learner's ``/metrics`` (``service.observe.learner_metrics``) on a daemon thread;
    None when ``port`` is 0. A port already taken is reported and learning goes on without
    it: the loop must not stop for its instruments."""
    if port == 0:
        return None
    counts = learner.observer.counts if isinstance(learner.observer, StatsPublisher) else None
    try:
        server, _ = scrape.serve(port, learner_registry(learner, counts), host)
    except OSError as exc:
        console.print(f"[bold yellow]warning:[/] /metrics not served on {host}:{port}: {exc}")
        return None
    console.print(f"metrics on http://{host}:{port}/metrics")
    return server


def register(app: typer.Typer) -> None:
    app.command("learn")(learn)


if (
    __name__ == "__main__"
):  # `python -m service.commands.cmd_learn`: the learner without the other commands
    typer.run(learn)
