"""Observability shared by every process: how ``/metrics`` is rendered (one process, or the
workers of one server summed through prometheus-client's multiprocess files), the learner's
metrics server, bounded label sets, and the figures of work any process may do (generation,
guardrails, fine-tune rounds). The catalog of every metric is ``docs/metrics.md``."""
