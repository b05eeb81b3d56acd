"""``copyloop learn``: the learner process (decisions ⨝ feedback → VW → checkpoint → announce).

Stops cleanly on SIGTERM or Ctrl-C: it finishes the current batch, writes a checkpoint and
exits. A SIGKILL loses nothing either: the next start resumes from the last checkpoint."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

import typer
from rich.console import Console

from bandit.errors import BanditError
from bandit.learner import Learner, LearnerConfig
from bandit.policy import EXPLORATIONS, PolicyConfig
from bandit.reward import RewardConfig
from service.settings import Settings
from streams.errors import StreamsError
from streams.topics import TopicAdmin

console = Console(stderr=True)


def learn(
    exploration: str = typer.Option("squarecb", help=f"one of {', '.join(EXPLORATIONS)}"),
    epsilon: float = typer.Option(0.05, help="exploration rate for epsilon and bag"),
    model: str = typer.Option(
        "vw", help="vw (VW's online learner) or refit (batch refits, Thompson sampling)"
    ),
    seed: int = typer.Option(0, help="seed of the model's draws and VW's randomness"),
    lateness: float = typer.Option(60.0, help="event-time slack (s) before a window closes"),
    idle_close: bool = typer.Option(
        True, help="close windows by the wall clock when no events arrive"
    ),
    max_seconds: float = typer.Option(0.0, help="stop after this long (0: run until stopped)"),
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
            policy=PolicyConfig(
                exploration=exploration,  # type: ignore[arg-type]
                epsilon=epsilon,
                model=model,  # type: ignore[arg-type]
            ),
            seed=seed,
            snapshot_every_s=settings.snapshot_every_s,
            lateness_s=lateness,
            idle_close=idle_close,
        )
        admin = TopicAdmin(settings.kafka_bootstrap)
        admin.ensure(settings.topics, partitions=settings.topic_partitions)
        admin.close()
        learner = Learner.connect(config, settings.kafka_bootstrap)
        learner.start()
    except (BanditError, StreamsError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(
        f"learning from {settings.topics.decisions} + {settings.topics.feedback} "
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
    console.print(
        f"stopped: {stats.learned} learned events, {stats.checkpoints} checkpoints, "
        f"{stats.announcements} announcements"
    )


def register(app: typer.Typer) -> None:
    app.command("learn")(learn)


if (
    __name__ == "__main__"
):  # `python -m service.commands.cmd_learn`: the learner without the other commands
    typer.run(learn)
