"""The Grafana and Prometheus files under ``deploy/`` checked structurally: every dashboard panel
has the provisioned datasource and queries, every metric a query names is in the catalog
(``docs/metrics.md``), and every catalogued metric is one the processes really expose."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client import generate_latest

from bandit.learner import Learner
from service.observe import work_metrics
from service.observe.learner_metrics import learner_registry
from service.ranker.metrics import Metrics
from tests.conftest import REPO
from tests.service.observe.promtext import metric_names
from tests.service.observe.test_metric_sources import (
    fake_learner,
    filled_counts,
    runtime_figures,
)

DEPLOY = REPO / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
CATALOG = REPO / "docs" / "metrics.md"
#: what a histogram's name stands for in queries
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
#: PromQL's own words and Prometheus' series that are not in the catalog
_PROMQL_WORDS = frozenset(
    {"sum", "by", "rate", "increase", "histogram_quantile", "le", "min", "max", "on"}
    | {"group_left", "up", "job", "outcome", "kind", "status", "reason", "topic", "product"}
    | {"variant", "segment", "trait", "rule", "explored", "version", "__range", "m", "h"}
)


def catalog() -> dict[str, str]:
    """Metric name → type, from the catalog's tables (the first two columns)."""
    found: dict[str, str] = {}
    for line in CATALOG.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `(copyloop_[a-z0-9_]+)` \| (\w+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def query_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names and values left out)."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b", expr))
    return {n for n in names if n.startswith("copyloop_") or n == "up"}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in dashboard["panels"]:
        out += [p] if p.get("type") != "row" else p.get("panels", [])
    return out


def test_the_two_dashboards_are_there() -> None:
    titles = {json.loads(p.read_text(encoding="utf-8"))["uid"] for p in DASHBOARDS}
    assert titles == {"copyloop-loop-health", "copyloop-growth"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_queries_catalogued_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    uid = _datasource_uid()
    known = catalog()
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"{path.name}: repeated panel ids"
    for p in panels(dashboard):
        where = f"{path.name} panel {p['title']!r}"
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, where
        assert p["targets"], f"{where}: no queries"
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), where
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid and t["expr"].strip(), where
            names = query_metrics(t["expr"])
            assert names, f"{where}: {t['expr']!r} reads no metric"
            for name in names - {"up"}:
                base = _histogram_base(name, known)
                assert base in known, f"{where}: {name} is not in docs/metrics.md"


def _histogram_base(name: str, known: dict[str, str]) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and known.get(base) == "histogram":
            return base
    return name


def _datasource_uid() -> str:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    [source] = provisioned["datasources"]
    assert source["type"] == "prometheus"
    return cast(str, source["uid"])


def test_query_names_are_read_from_promql() -> None:
    expr = (
        'sum by (le) (rate(copyloop_rank_latency_seconds_bucket{job="copyloop-service"}[5m]))'
        ' / on (product) group_left up{job=~"copyloop_.*"}'
    )
    assert query_metrics(expr) == {"copyloop_rank_latency_seconds_bucket", "up"}


def test_catalogued_metrics_are_exposed_by_the_processes(tmp_path: Path) -> None:
    """Every name in the catalog comes out of a service's or a learner's /metrics."""
    work_metrics.record_round("skipped")  # labelled families show once they have a child
    work_metrics.record_generation(1, 1, 0.1, {"ad_law": 1})
    service = Metrics()
    service.bind(lambda: runtime_figures(1))
    counts, shown, _ = filled_counts()
    service.decided(shown)
    service.jobs.labels("done").inc()
    service.client_errors.labels("422").inc()
    learner = cast(Learner, fake_learner(tmp_path))
    text = service.render().decode()
    text += generate_latest(learner_registry(learner, counts)).decode()
    exposed = metric_names(text)
    for name, kind in catalog().items():
        expected = f"{name}_count" if kind == "histogram" else name
        assert expected in exposed, f"{name} is exposed by no process"
    assert set(catalog()) >= {"copyloop_rank_latency_seconds", "copyloop_consumer_lag"}


def test_prometheus_config_scrapes_the_service_and_the_learner() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"copyloop-service", "copyloop-learner"}
    targets = {j: c["static_configs"][0]["targets"] for j, c in jobs.items()}
    assert targets["copyloop-learner"] == ["127.0.0.1:9464"]  # the learner's default port
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "copyloop.yml").read_text()
    )
    assert provider["providers"][0]["type"] == "file"
