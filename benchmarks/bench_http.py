"""Rank over HTTP under load: throughput and p50/p99/p99.9 latency of ``POST /v1/rank`` from a
load generator in its own process against ``copyloop serve`` (TARGETS.md: p99 <= 10 ms at
1,000 req/s sustained for 60 s, 0 errors), beside the same quantiles of the service's own
handler histogram (``copyloop_rank_latency_seconds``, every worker's). Writes JSON.

The generator is open-loop: request ``i`` is due at ``start + i / rate`` whatever happened to
the others, and its latency is counted from that due time, so a stalled server shows up as
latency instead of as fewer requests (no coordinated omission). Connections are kept alive, as
an ad server's would be. It speaks raw HTTP/1.1 on asyncio to stay light: the generator shares
the machine with the server, and a heavy client would measure itself.

Needs a broker: ``COPYLOOP_KAFKA_BOOTSTRAP`` (default 127.0.0.1:19092); pools and decisions go
to topics under a fresh prefix.

    .venv/bin/python benchmarks/bench_http.py [--rate 1000] [--duration 60] [--workers 1]
        [--durable-ack]

``--durable-ack`` serves with ``COPYLOOP_DURABLE_ACK=true`` (each answer waits until its
decision is acknowledged by Kafka or fsynced into the spool), to measure what that costs
against a run without it under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_result  # this folder: the script's own

from streams.producer import KafkaEventSink
from streams.schemas import TRAITS, Variant, VariantPool
from streams.topics import TopicAdmin, Topics

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


# -- load generator (its own process) -------------------------------------------------------
def _bodies(products: int, n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body = {
            "product_id": f"bench-{rng.randrange(products)}",
            "channel": "ad_headline",
            "user": {
                "user_id": f"u{rng.randrange(100_000)}",
                "age": rng.randint(18, 70),
                "gender": rng.choice(["f", "m"]),
                "city_tier": rng.randint(1, 5),
            },
            "context": {"device": rng.choice(["ios", "android", "web"])},
        }
        out.append(json.dumps(body).encode())
    return out


async def _load(port: int, rate: float, duration: float, connections: int, bodies: list[bytes]):
    total = int(rate * duration)
    due = [i / rate for i in range(total)]
    latencies: list[float] = [0.0] * total
    service: list[float] = [0.0] * total
    statuses: list[int] = [0] * total
    queue: asyncio.Queue[int] = asyncio.Queue()
    start = time.perf_counter() + 0.2

    async def scheduler() -> None:
        for i in range(total):
            delay = start + due[i] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(i)
        for _ in range(connections):
            queue.put_nowait(-1)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while True:
            i = await queue.get()
            if i < 0:
                break
            body = bodies[i % len(bodies)]
            head = (
                f"POST /v1/rank HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            sent = time.perf_counter()
            try:
                writer.write(head + body)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                statuses[i] = int(status_line.split()[1])
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
                statuses[i] = -1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            done = time.perf_counter()
            latencies[i] = done - (start + due[i])
            service[i] = done - sent
        writer.close()

    await asyncio.gather(scheduler(), *(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    return latencies, service, statuses, elapsed


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def load_main(args: argparse.Namespace) -> None:
    """The load generator: runs a warm-up, then the measured run; prints JSON on stdout."""
    bodies = _bodies(args.products, 5000, args.seed)
    asyncio.run(_load(args.port, args.rate, min(3.0, args.duration), args.connections, bodies))
    lat, svc, statuses, elapsed = asyncio.run(
        _load(args.port, args.rate, args.duration, args.connections, bodies)
    )
    ok = [x for x, s in zip(lat, statuses, strict=True) if s == 200]
    ok_svc = [x for x, s in zip(svc, statuses, strict=True) if s == 200]
    errors = sum(1 for s in statuses if s != 200)
    result = {
        "requests": len(statuses),
        "errors": errors,
        "error_statuses": sorted({s for s in statuses if s != 200}),
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(len(ok) / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {  # from each request's due time (includes any queueing)
            "p50": round(_pct(ok, 0.50) * 1e3, 3),
            "p90": round(_pct(ok, 0.90) * 1e3, 3),
            "p99": round(_pct(ok, 0.99) * 1e3, 3),
            "p999": round(_pct(ok, 0.999) * 1e3, 3),
            "max": round(max(ok, default=0.0) * 1e3, 3),
        },
        "service_ms": {  # from the moment the request was written
            "p50": round(_pct(ok_svc, 0.50) * 1e3, 3),
            "p99": round(_pct(ok_svc, 0.99) * 1e3, 3),
            "p999": round(_pct(ok_svc, 0.999) * 1e3, 3),
        },
    }
    print(json.dumps(result))


# -- orchestration ---------------------------------------------------------------------------
def _pools(products: int, variants: int, seed: int) -> list[VariantPool]:
    rng = random.Random(seed)
    pools = []
    for p in range(products):
        vs = [
            Variant(
                variant_id=f"v{i}",
                text="限时8折 羊毛围巾 冬季暖心之选"[: rng.randint(6, 16)],
                language="zh",
                channel="ad_headline",
                traits=rng.sample(list(TRAITS), 3),
            )
            for i in range(variants)
        ]
        pools.append(
            VariantPool(
                product_id=f"bench-{p}", pool_version=1, generator_version="bench", variants=vs
            )
        )
    return pools


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its direct children (uvicorn's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description="rank over HTTP under load")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--products", type=int, default=50)
    parser.add_argument("--variants", type=int, default=8, help="variants per pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--durable-ack",
        action="store_true",
        help="answer only once each decision is on Kafka or on disk (COPYLOOP_DURABLE_ACK)",
    )
    parser.add_argument("--out", type=Path, default=Path("var/bench/http.json"))
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        parser.error("`--rate`, `--duration` must be > 0 and `--connections` >= 1")
    if args.load_only:
        load_main(args)
        return

    bootstrap = os.environ.get("COPYLOOP_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:8]}.")
    TopicAdmin(bootstrap).ensure(topics, partitions=4)
    sink = KafkaEventSink(bootstrap)
    for pool in _pools(args.products, args.variants, args.seed):
        sink.add(topics.variants, pool.product_id, pool)
    sink.flush(30)
    sink.close()

    port = _free_port()
    data = Path(tempfile.mkdtemp(prefix="copyloop-bench-"))
    env = {
        **os.environ,
        "COPYLOOP_KAFKA_BOOTSTRAP": bootstrap,
        "COPYLOOP_TOPIC_PREFIX": topics.prefix,
        "COPYLOOP_DATA_DIR": str(data),
        "COPYLOOP_DURABLE_ACK": "true" if args.durable_ack else "false",
    }
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "service", "serve", "--port", str(port)),
            *("--workers", str(args.workers), "--log-level", "warning"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        with console.status("starting the service"):
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the service did not become ready")
                time.sleep(0.2)
        cmd = [sys.executable, __file__, "--load-only", "--port", str(port)]
        cmd += ["--rate", str(args.rate), "--duration", str(args.duration)]
        cmd += ["--connections", str(args.connections), "--products", str(args.products)]
        cpu_before = _cpu_seconds(server.pid)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("load", total=args.duration + min(3.0, args.duration) + 0.5)
            load = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
            while load.poll() is None:
                time.sleep(0.5)
                bar.advance(task, 0.5)
            out, _ = load.communicate()
        if load.returncode != 0:
            raise SystemExit(f"the load generator failed ({load.returncode})")
        figures = json.loads(out)
        cpu = _cpu_seconds(server.pid) - cpu_before
        scrapes = _scrape_workers(port, args.workers)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()

    p99 = figures["latency_ms"]["p99"]
    result = {
        "benchmark": "rank_http",
        "config": {k: getattr(args, k) for k in ("rate", "duration", "connections", "workers")}
        | {"products": args.products, "variants": args.variants, "durable_ack": args.durable_ack},
        **figures,
        "target": {"p99_ms": 10.0, "rate_rps": 1000.0, "duration_s": 60.0, "errors": 0},
        "p99_vs_target": round(p99 / 10.0, 3),
        "meets_target": bool(
            p99 <= 10.0
            and figures["errors"] == 0
            and args.rate >= 1000
            and args.duration >= 60
            and figures["throughput_rps"] >= 0.98 * args.rate
        ),
        # the handler's own histogram (parse, rank, hand to the publisher), all workers summed,
        # warm-up included; quantiles interpolated within its buckets as Prometheus does
        "handler_histogram_ms": _handler_quantiles(scrapes) | {"workers_seen": len(scrapes)},
        "spooled_decisions": sum(
            _metric(text, "copyloop_records_spooled_total") or 0.0 for text in scrapes
        ),
        # load-independent cost: server CPU (all threads, all workers) per request, warm-up
        # included; 1000 / this is the most one core could serve
        "server_cpu_ms_per_request": round(
            cpu * 1e3 / (figures["requests"] + int(args.rate * min(3.0, args.duration))), 3
        ),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    write_result(args.out, result)


def _scrape_workers(port: int, workers: int, tries: int = 60) -> list[str]:
    """One ``/metrics`` text per worker: each scrape reaches whichever worker accepts the
    connection, and each worker counts on its own, so scrapes (on fresh connections, with the
    load over) are repeated until ``workers`` distinct ones were seen."""
    seen: dict[tuple[str, ...], str] = {}
    for _ in range(tries):
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        key = tuple(
            line for line in text.splitlines() if line.startswith("copyloop_rank_latency_seconds")
        )
        seen.setdefault(key, text)
        if len(seen) >= workers:
            break
    return list(seen.values())


def _handler_quantiles(texts: list[str]) -> dict[str, float | int]:
    """p50/p99/p99.9 in ms of ``copyloop_rank_latency_seconds`` summed over ``texts``."""
    buckets: dict[float, float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name != "copyloop_rank_latency_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
    edges = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    out: dict[str, float | int] = {"count": int(total)}
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
        out[name] = round(_bucket_quantile(edges, [buckets[e] for e in edges], q) * 1e3, 3)
    return out


def _bucket_quantile(edges: list[float], cumulative: list[float], q: float) -> float:
    """Prometheus's ``histogram_quantile``: linear within the bucket the rank falls in; the
    highest finite edge when it falls in the ``+Inf`` bucket."""
    if not edges or cumulative[-1] <= 0:
        return 0.0
    rank = q * cumulative[-1]
    lower, below = 0.0, 0.0
    for edge, count in zip(edges, cumulative, strict=True):
        if count >= rank:
            if math.isinf(edge):
                return lower
            inside = count - below
            return lower + (edge - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = edge, count
    return lower


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


if __name__ == "__main__":
    main()
