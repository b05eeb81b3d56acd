"""The ``copyloop`` command line (CONTRACT.md §5). Each command lives in
``service/commands/`` as a thin typer wrapper with ``register(app)``."""

from __future__ import annotations

import typer

from service.commands import (
    cmd_demo,
    cmd_finetune,
    cmd_generate,
    cmd_kafka,
    cmd_learn,
    cmd_replay,
    cmd_serve,
    cmd_simulate,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="copyloop: copy that learns.",
)

for _command in (
    cmd_kafka,
    cmd_demo,
    cmd_generate,
    cmd_serve,
    cmd_replay,
    cmd_learn,
    cmd_simulate,
    cmd_finetune,
):
    _command.register(app)
