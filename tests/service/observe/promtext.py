"""Reading Prometheus' text format in tests (prometheus-client's own parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def metric_names(text: str) -> set[str]:
    """Every sample name in ``text``."""
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}
