"""deploy/: the Kubernetes manifests against the Kubernetes schemas (strict), the YAML linted,
the compose file against the compose specification, the Dockerfiles' key rules, and the alert
rules against the metrics that exist. Nothing here starts a container or a cluster.

Strimzi's and the Prometheus Operator's resources (KafkaTopic, Kafka, KafkaNodePool,
ServiceMonitor) have no schema in kubernetes-validate; they are checked against the small
schemas below, which hold the fields this deployment relies on."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from streams.producer import MAX_MESSAGE_BYTES
from streams.topics import Topics
from tests.system_tools import system_tool

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
COMPOSE = DEPLOY / "compose"
GRAFANA = DEPLOY / "grafana"
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
#: the oldest Kubernetes the manifests support (the pod-index label, CronJob time zones) and
#: the newest whose schemas the installed kubernetes-validate ships
KUBE_VERSIONS = ("1.30", kubernetes_validate.latest_version())

Doc = dict[str, Any]

_META = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
_CLUSTER_LABEL = {
    "type": "object",
    "required": ["name", "labels"],
    "properties": {
        "labels": {
            "type": "object",
            "required": ["strimzi.io/cluster"],
        }
    },
}
_KAFKA_CONFIG = {
    "type": "object",
    "additionalProperties": {"type": ["string", "integer", "boolean"]},
}


def _crd(api: str, kind: str, spec: Doc, metadata: Doc = _META) -> Doc:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": spec,
        },
    }


#: the custom resources' structure, as their operators' CRDs define the fields used here
CRD_SCHEMAS: dict[str, Doc] = {
    "KafkaTopic": _crd(
        "kafka.strimzi.io/v1beta2",
        "KafkaTopic",
        {
            "type": "object",
            "required": ["topicName", "partitions", "replicas", "config"],
            "additionalProperties": False,
            "properties": {
                "topicName": {"type": "string", "pattern": r"^[A-Za-z0-9._\-]+$"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": _KAFKA_CONFIG,
            },
        },
        _CLUSTER_LABEL,
    ),
    "KafkaNodePool": _crd(
        "kafka.strimzi.io/v1beta2",
        "KafkaNodePool",
        {
            "type": "object",
            "required": ["replicas", "roles", "storage"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 1},
                "roles": {"type": "array", "items": {"enum": ["controller", "broker"]}},
                "storage": {"type": "object", "required": ["type"]},
            },
        },
        _CLUSTER_LABEL,
    ),
    "Kafka": _crd(
        "kafka.strimzi.io/v1beta2",
        "Kafka",
        {
            "type": "object",
            "required": ["kafka", "entityOperator"],
            "properties": {
                "kafka": {
                    "type": "object",
                    "required": ["listeners", "config"],
                    "properties": {
                        "listeners": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "port", "type", "tls"],
                                "properties": {"port": {"type": "integer"}},
                            },
                        },
                        "config": _KAFKA_CONFIG,
                    },
                },
                "entityOperator": {"type": "object", "required": ["topicOperator"]},
            },
        },
    ),
    "ServiceMonitor": _crd(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object"},
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": r"^[0-9]+[smh]$"},
                        },
                    },
                },
            },
        },
    ),
}


def _load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _kustomization(folder: Path) -> Doc:
    doc: Doc = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    return doc


def base_docs() -> list[Doc]:
    """The base's own manifests as written (what kustomize starts from; the folders it includes
    are checked in their rendering)."""
    files = [BASE / name for name in _kustomization(BASE)["resources"]]
    return [d for path in files if path.is_file() for d in _load_all(path)]


@cache
def _render(folder: Path) -> tuple[Doc, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize rendering is not checked")
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"kubectl kustomize {folder} failed: {out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def rendered(folder: Path) -> list[Doc]:
    """The overlay as `kubectl kustomize` renders it (skipped where kubectl is missing)."""
    return list(_render(folder))


def _named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def validate(doc: Doc, version: str) -> None:
    """Strict Kubernetes schema validation, or the CRD schema above; a clear failure naming
    the resource and the field."""
    where = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
    schema = CRD_SCHEMAS.get(doc.get("kind", ""))
    try:
        if schema is not None:
            jsonschema.validate(doc, schema)
        else:
            kubernetes_validate.validate(doc, version, strict=True)
    except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
        field = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{where}: {field}: {exc.message}")


# -- Kubernetes ------------------------------------------------------------------------------


def test_every_base_manifest_is_a_resource_of_the_kustomization() -> None:
    listed = {r for r in _kustomization(BASE)["resources"] if (BASE / r).is_file()}
    files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert files == listed, f"unlisted: {files - listed}; missing: {listed - files}"
    assert OVERLAYS, "no overlay under deploy/k8s/overlays"


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_base_manifests_validate_strictly(version: str) -> None:
    for doc in base_docs():
        validate(doc, version)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_rendered_overlays_validate_strictly(overlay: Path, version: str) -> None:
    docs = rendered(overlay)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        "copyloop"
    }
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize(
    "bad",
    [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"bogus": 1}},
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaTopic",
            "metadata": {"name": "x"},
            "spec": {"topicName": "t", "partitions": 1, "replicas": 1, "config": {}},
        },
    ],
    ids=["unknown-field", "topic-without-cluster"],
)
def test_validation_rejects_a_bad_manifest(bad: Doc) -> None:
    with pytest.raises(pytest.fail.Exception):
        validate(bad, KUBE_VERSIONS[0])


def test_every_grafana_dashboard_becomes_a_config_map() -> None:
    dashboards = {p.relative_to(GRAFANA).as_posix() for p in GRAFANA.glob("dashboards/*.json")}
    assert dashboards, "no dashboards under deploy/grafana/dashboards"
    generated = {f for g in _kustomization(GRAFANA)["configMapGenerator"] for f in g["files"]}
    assert generated == dashboards
    for overlay in OVERLAYS:
        maps = [
            d
            for d in rendered(overlay)
            if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard")
        ]
        assert {k for m in maps for k in m["data"]} == {Path(f).name for f in dashboards}


def _pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            yield f"{d['kind']} {d['metadata']['name']}", spec["template"]["spec"]


def test_every_pod_is_non_root_read_only_and_bounded() -> None:
    pods = list(_pod_specs(base_docs()))
    assert len(pods) == 5, [name for name, _ in pods]
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            # mount paths in the manifests, not temporary files of this test
            writable = {"/var/lib/copyloop", "/tmp"}  # noqa: S108
            assert writable <= mounts, f"{name}: writable paths {mounts}"


def test_keys_come_from_the_secret_and_no_secret_is_committed() -> None:
    for path in DEPLOY.rglob("*.y*ml"):
        kinds = {d.get("kind") for d in _load_all(path) if isinstance(d, dict)}
        assert "Secret" not in kinds, f"{path} commits a Secret"
    for name, pod in _pod_specs(base_docs()):
        for c in pod["containers"]:
            for env in c.get("env", []):
                if env["name"].endswith(("_KEY", "_KEYS")):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    assert ref and ref["name"] == "copyloop-keys", f"{name}: {env['name']}"


def test_rankers_probe_scale_and_survive_disruption() -> None:
    docs = base_docs()
    ranker = _named(docs, "Deployment", "copyloop-ranker")["spec"]["template"]["spec"]
    (c,) = ranker["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "PROMETHEUS_MULTIPROC_DIR" in {e["name"] for e in c["env"]}
    hpa = _named(docs, "HorizontalPodAutoscaler", "copyloop-ranker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "copyloop-ranker"
    assert hpa["spec"]["minReplicas"] >= 2
    _named(docs, "PodDisruptionBudget", "copyloop-ranker")
    _named(docs, "Service", "copyloop-ranker")


def test_learner_is_a_stateful_set_with_its_own_checkpoint_volume() -> None:
    learner = _named(base_docs(), "StatefulSet", "copyloop-learner")["spec"]
    (claim,) = learner["volumeClaimTemplates"]
    (c,) = learner["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/copyloop"  # checkpoints and lock
    assert c["args"][0] == "learn"


def test_generation_and_fine_tuning_run_on_gpu_nodes() -> None:
    docs = base_docs()
    gpu = {
        name: pod
        for name, pod in _pod_specs(docs)
        if any("nvidia.com/gpu" in c["resources"]["limits"] for c in pod["containers"])
    }
    assert set(gpu) == {"Deployment copyloop-generator", "CronJob copyloop-finetune"}
    for name, pod in gpu.items():
        assert pod["nodeSelector"], name
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]), name
        assert all(c["image"] == "copyloop-cuda" for c in pod["containers"]), name


def test_kafka_topics_match_the_code() -> None:
    """Names and settings from streams/topics.py; partitions as the processes are told."""
    for docs in [base_docs()] + [rendered(o) for o in OVERLAYS]:
        topics = {d["spec"]["topicName"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
        code = Topics(_named(docs, "ConfigMap", "copyloop-config")["data"]["COPYLOOP_TOPIC_PREFIX"])
        assert set(topics) == set(code.all())
        told = int(
            _named(docs, "ConfigMap", "copyloop-config")["data"]["COPYLOOP_TOPIC_PARTITIONS"]
        )
        for name, spec in topics.items():
            config = {k: str(v) for k, v in spec["config"].items()}
            assert config.items() >= code.configs(name).items(), name
            assert int(config["max.message.bytes"]) == MAX_MESSAGE_BYTES, name
            assert spec["partitions"] == told, name
        kafka = _named(docs, "Kafka", "copyloop")["spec"]["kafka"]["config"]
        assert kafka["auto.create.topics.enable"] is False
        assert kafka["message.max.bytes"] == MAX_MESSAGE_BYTES


def test_only_the_rankers_are_reachable_from_outside() -> None:
    policies = [d for d in base_docs() if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if "ingress" not in p["spec"]]
    assert len(deny) == 1 and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    assert deny[0]["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "copyloop"}
    open_to_all = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in policies
        for rule in p["spec"].get("ingress", [])
        if not rule.get("from")
    }
    assert open_to_all == {"ranker"}


def test_service_monitors_scrape_rankers_and_learners() -> None:
    docs = base_docs()
    ports = {
        (s["metadata"]["labels"]["app.kubernetes.io/component"], p["name"])
        for s in docs
        if s["kind"] == "Service"
        for p in s["spec"]["ports"]
    }
    scraped = {
        (component, e["port"])
        for m in docs
        if m["kind"] == "ServiceMonitor"
        for component in _selected_components(m["spec"]["selector"])
        for e in m["spec"]["endpoints"]
    }
    assert {("ranker", "http"), ("learner", "metrics")} <= scraped & ports


def _selected_components(selector: Doc) -> set[str]:
    key = "app.kubernetes.io/component"
    found = {selector.get("matchLabels", {}).get(key)} - {None}
    for expr in selector.get("matchExpressions", []):
        if expr["key"] == key and expr["operator"] == "In":
            found |= set(expr["values"])
    return found


# -- YAML, compose ---------------------------------------------------------------------------


def test_yaml_under_deploy_is_lint_clean() -> None:
    config = YamlLintConfig(file=str(REPO / ".yamllint"))
    problems = []
    for path in sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]):
        rel = path.relative_to(REPO)
        if config.is_file_ignored(str(rel)):
            continue
        for p in linter.run(path.read_text(encoding="utf-8"), config, str(rel)):
            problems.append(f"{rel}:{p.line}:{p.column} {p.level} {p.desc} ({p.rule})")
    assert not problems, "\n".join(problems)


def _check_compose(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        check=False,
    )


def test_compose_files_follow_the_compose_specification(tmp_path: Path) -> None:
    files = sorted(COMPOSE.glob("compose*.yaml"))
    ok = _check_compose(*files)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  x:\n    image: a:1\n    not_a_compose_key: 1\n")
    assert _check_compose(bad).returncode != 0


def test_compose_runs_the_whole_loop_on_loopback_ports() -> None:
    (compose,) = _load_all(COMPOSE / "compose.yaml")
    services = compose["services"]
    assert {"kafka", "service", "learner", "generator", "finetune", "prometheus", "grafana"} <= set(
        services
    )
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, svc in services.items():
        assert _pinned(svc["image"]), f"{name}: {svc['image']}"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts missing {source}"
    promtool = system_tool("promtool")
    for args in (
        ["check", "rules", str(ALERTS)],
        ["check", "config", "--syntax-only", str(COMPOSE / "prometheus.yml")],
    ):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


# -- Dockerfiles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    user: str | None


_EXACT_TAG = re.compile(r":v?\d+\.\d+\.\d+[\w.\-]*$")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _pinned(image: str) -> bool:
    """An image by digest or by an exact version tag (never `latest`, never a moving `3.11`)."""
    return bool(_DIGEST.search(image) or _EXACT_TAG.search(image))


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile, each with its base (ARG defaults substituted) and the last
    USER it sets."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in (ln.strip() for ln in lines):
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not stages and "=" in rest:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif word == "FROM":
            parts = [p for p in shlex.split(rest) if not p.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name, None))
        elif word == "USER" and stages:
            stages[-1] = Stage(stages[-1].base, stages[-1].name, rest.strip())
    return stages


def dockerfile_problems(text: str) -> list[str]:
    stages = parse_dockerfile(text)
    names = {s.name for s in stages}
    problems = []
    if len(stages) < 2:
        problems.append("not multi-stage")
    for s in stages:
        if s.base not in names and not _pinned(s.base):
            problems.append(f"base {s.base} is pinned neither by digest nor by exact tag")
        if "." in s.base.split("/")[0] and "/" in s.base:
            problems.append(f"base {s.base} names a registry host")
    user = stages[-1].user if stages else None
    if user is None or user.split(":")[0] in ("root", "0"):
        problems.append(f"the final stage runs as {user or 'root'}")
    if "uv sync --frozen --no-dev" not in re.sub(r"\s+", " ", text):
        problems.append("not built from uv.lock (uv sync --frozen --no-dev)")
    return problems


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_are_multi_stage_pinned_non_root_and_locked(path: Path) -> None:
    assert dockerfile_problems(path.read_text(encoding="utf-8")) == []


_GOOD = """ARG B=python:3.11.14-slim
FROM ${B} AS build
RUN uv sync --frozen --no-dev
FROM ${B}
USER 10001
"""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_GOOD.replace("3.11.14-slim", "3.11-slim"), "pinned neither"),
        (_GOOD.replace("3.11.14-slim", "latest"), "pinned neither"),
        (_GOOD.replace("USER 10001", "USER root"), "runs as root"),
        (_GOOD.replace("USER 10001\n", ""), "runs as root"),
        (_GOOD.replace("FROM ${B} AS build\n", ""), "not multi-stage"),
        (_GOOD.replace("--frozen ", ""), "uv.lock"),
        (_GOOD.replace("python:", "registry.example:5000/python:"), "registry host"),
    ],
)
def test_dockerfile_rules_catch_each_fault(text: str, problem: str) -> None:
    assert dockerfile_problems(_GOOD) == []
    assert any(problem in p for p in dockerfile_problems(text)), dockerfile_problems(text)


def test_dockerignore_lets_in_what_the_images_copy() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    for path in DOCKERFILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    assert source in allowed, f"{path.name} copies {source}, .dockerignore drops it"


def test_the_cpu_image_processes_start_without_torch() -> None:
    """The CPU image leaves torch out: serving and learning must never import it."""
    code = (
        "import sys, service.cli, service.api.app, bandit.learner; sys.exit('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr or "torch was imported"


# -- alerts ----------------------------------------------------------------------------------

_SERIES_SUFFIX = re.compile(r"_(total|bucket|sum|count|created|info)$")


def metric_catalog() -> set[str]:
    """The metric names docs/metrics.md lists, else those the code registers."""
    catalog = REPO / "docs" / "metrics.md"
    if catalog.is_file():
        return set(re.findall(r"copyloop_[a-z0-9_]+", catalog.read_text(encoding="utf-8")))
    names: set[str] = set()
    for package in ("service", "bandit", "streams"):
        for path in (REPO / package).rglob("*.py"):
            names |= set(re.findall(r"[\"'](copyloop_[a-z0-9_]+)[\"']", path.read_text("utf-8")))
    return names


def test_alert_rules_name_metrics_that_exist() -> None:
    (doc,) = _load_all(ALERTS)
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 10
    catalog = metric_catalog()
    missing = set()
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        for name in re.findall(r"copyloop_[a-z0-9_]+", rule["expr"]):
            if name not in catalog and _SERIES_SUFFIX.sub("", name) not in catalog:
                missing.add(f"{rule['alert']}: {name}")
    assert not missing, f"not in the metrics catalog: {sorted(missing)}"
