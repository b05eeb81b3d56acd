"""``copyloop generate`` and ``copyloop check`` (CONTRACT.md §5), and publishing a pool to the
variants topic (``generate --publish``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from generator.errors import GeneratorError
from generator.guardrails import RULE_NAMES, Checker
from service.settings import Settings
from streams.errors import StreamsError
from streams.producer import KafkaEventSink
from streams.schemas import CHANNELS, Channel, Product
from streams.serde import describe

console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_product(path: Path) -> Product:
    """A product JSON file, or an exit with a message that names the bad field."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot read product file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _fail(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    try:
        return Product.model_validate(data)
    except ValidationError as exc:
        raise _fail(f"invalid product in {path}: {describe(exc)}") from exc


def _channel(value: str) -> Channel:
    for ch in CHANNELS:
        if ch == value:
            return ch
    raise _fail(f"`--channel` must be one of {', '.join(CHANNELS)}; got {value!r}")


def _shopper(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise _fail(f"`--shopper` is not valid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise _fail("`--shopper` must be a JSON object")
    return data


def generate_cmd(
    product: Annotated[Path, typer.Option("--product", help="a Product JSON file")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, max=64, help="variants in the pool")] = 8,
    channel: Annotated[str, typer.Option(help=f"one of {', '.join(CHANNELS)}")] = "ad_headline",
    seed: Annotated[int, typer.Option(help="sampling seed (same seed, same pool)")] = 0,
    model: Annotated[
        Path | None, typer.Option(help="a causal LM folder; default the bootstrap model")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="torch device; default the GPU when there is one")
    ] = None,
    pool_version: Annotated[int, typer.Option(min=1, help="`pool_version` of the pool")] = 1,
    publish: Annotated[
        bool, typer.Option(help="also publish the pool to the variants topic")
    ] = False,
) -> None:
    """Write a checked pool of copy variants: one JSON line per variant on stdout."""
    from transformers.utils import logging as hf_logging

    from generator.model import CopyGenerator
    from generator.sampling import generate

    hf_logging.disable_progress_bar()  # our own status line says what is loading

    prod = load_product(product)
    ch = _channel(channel)
    settings = Settings()
    path = model or settings.generator_model
    try:
        with console.status("loading the model"):
            gen = CopyGenerator.from_path(path, device=device)
        with console.status(f"writing {n} variants for {prod.product_id}"):
            report = generate(gen, prod, ch, n, seed=seed, pool_version=pool_version)
    except GeneratorError as exc:
        raise _fail(str(exc)) from exc
    for v in report.pool.variants:
        check = report.checks[v.variant_id]
        line = {
            "variant_id": v.variant_id,
            "text": v.text,
            "language": v.language,
            "channel": v.channel,
            "traits": v.traits,
            "checks": {**check.to_json(), "rules": list(RULE_NAMES)},
        }
        print(json.dumps(line, ensure_ascii=False))
    console.print(
        f"{len(report.pool.variants)} of {report.sampled} candidates kept "
        f"({report.passed} passed the guardrails) in {report.seconds:.2f}s; "
        f"generator {report.pool.generator_version}",
        highlight=False,
        soft_wrap=True,
    )
    if len(report.pool.variants) < n:
        console.print(f"[yellow]only {len(report.pool.variants)} of {n} variants passed[/]")
    if publish:
        sink = KafkaEventSink(settings.kafka_bootstrap)
        try:
            sink.add(settings.topics.variants, report.pool.product_id, report.pool)
            sink.flush(timeout_s=30)
        except StreamsError as exc:
            raise _fail(f"publishing the pool failed: {exc}") from exc
        finally:
            sink.close()
        console.print(
            f"published pool v{pool_version} to {settings.topics.variants}", soft_wrap=True
        )


def check_cmd(
    product: Annotated[Path, typer.Option("--product", help="a Product JSON file")],
    text: Annotated[str, typer.Option("--text", help="the copy to check")],
    channel: Annotated[str, typer.Option(help=f"one of {', '.join(CHANNELS)}")] = "ad_headline",
    shopper: Annotated[
        str | None, typer.Option(help="the shopper's attributes as a JSON object")
    ] = None,
) -> None:
    """Run the guardrails on TEXT; exit 0 when it passes, 1 when it does not."""
    prod = load_product(product)
    ch = _channel(channel)
    try:
        result = Checker(prod, ch, shopper=_shopper(shopper)).check(text)
    except GeneratorError as exc:
        raise _fail(str(exc)) from exc
    print(json.dumps(result.to_json(), ensure_ascii=False))
    if not result.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)
    app.command("check")(check_cmd)
