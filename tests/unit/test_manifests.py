"""The Kubernetes manifests in deploy/k8s: valid against the Kubernetes schemas (offline,
kubernetes-validate) and consistent with the code (settings, topics, ports, probes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import orjson
import pytest
import yaml

from intentstream.settings import Settings
from intentstream.stream.topics import topic_specs
from tests.helpers import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
CUSTOM_KINDS = {"KafkaTopic", "KafkaUser", "ScaledObject", "TriggerAuthentication", "Kustomization"}
ALIASES = {"KAFKA_BOOTSTRAP", "REDIS_URL", "LLM_BASE_URL", "LLM_API_KEY"}


def documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path, doc))
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for path, doc in documents() if doc["kind"] == kind and "overlays" not in str(path)]


def config() -> dict[str, str]:
    (cm,) = of_kind("ConfigMap")
    return dict(cm["data"])


def containers() -> list[dict[str, Any]]:
    return [c for d in of_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]]


@pytest.mark.parametrize(
    ("path", "doc"),
    [(p, d) for p, d in documents() if d["kind"] not in CUSTOM_KINDS and "overlays" not in str(p)],
    ids=lambda x: x.name if isinstance(x, Path) else x.get("kind", "") + "/" + x["metadata"]["name"],
)
def test_resources_are_valid_against_the_kubernetes_schemas(path: Path, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, "1.30", strict=True)


def test_every_setting_a_manifest_sets_exists() -> None:
    known = {f"INTENTSTREAM_{name.upper()}" for name in Settings.model_fields} | ALIASES
    names = set(config())
    (secret,) = of_kind("Secret")
    names |= {k for k in secret["stringData"] if k != "ca.crt"}
    for container in containers():
        names |= {e["name"] for e in container.get("env", [])}
    unknown = names - known
    assert unknown == set()
    from_secrets = {  # what the Deployments take from Secrets, each with a stand-in value
        e["name"]: "from-a-secret" for c in containers() for e in c.get("env", []) if "valueFrom" in e
    }
    Settings.model_validate(
        {
            k.removeprefix("INTENTSTREAM_").lower(): v
            for k, v in {**config(), **from_secrets}.items()
            if k.startswith("INTENTSTREAM_")
        }
    )  # fmt: skip - the values parse, and together they make a valid configuration


def test_every_kafka_client_gets_the_sasl_password_and_the_ca_from_secrets() -> None:
    cfg = config()
    assert cfg["INTENTSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for deployment in of_kind("Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        if container["name"] == "vllm":
            continue
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["INTENTSTREAM_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "intentstream"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = mounts[str(Path(cfg["INTENTSTREAM_KAFKA_TLS_CA_FILE"]).parent)]
        (secret,) = [v["secret"] for v in spec["volumes"] if v["name"] == volume]
        assert secret["secretName"] == "intentstream-cluster-ca-cert"
    (user,) = of_kind("KafkaUser")
    assert user["spec"]["authentication"]["type"] == cfg["INTENTSTREAM_KAFKA_SASL_MECHANISM"].lower()


def test_topics_match_what_the_app_declares() -> None:
    cfg = config()
    settings = Settings(
        app_id=cfg["INTENTSTREAM_APP_ID"], topic_partitions=int(cfg["INTENTSTREAM_TOPIC_PARTITIONS"])
    )
    declared = {s.name: s for s in topic_specs(settings)}
    topics = {t["metadata"]["name"]: t["spec"] for t in of_kind("KafkaTopic")}
    assert set(topics) == set(declared)
    for name, spec in topics.items():
        assert spec["partitions"] == declared[name].partitions, name
        compacted = spec.get("config", {}).get("cleanup.policy") == "compact"
        assert compacted == declared[name].compacted, name


def test_autoscaling_is_bounded_by_partitions_and_watches_the_right_groups() -> None:
    cfg = config()
    partitions, app_id = int(cfg["INTENTSTREAM_TOPIC_PARTITIONS"]), cfg["INTENTSTREAM_APP_ID"]
    scaled = {s["metadata"]["name"]: s["spec"] for s in of_kind("ScaledObject")}
    assert set(scaled) == {"stream-worker", "planner"}
    deployments = {d["metadata"]["name"] for d in of_kind("Deployment")}
    groups = {}
    for spec in scaled.values():
        assert spec["scaleTargetRef"]["name"] in deployments
        assert spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        assert trigger["metadata"]["bootstrapServers"] == cfg["KAFKA_BOOTSTRAP"]
        groups[trigger["metadata"]["topic"]] = trigger["metadata"]["consumerGroup"]
    assert groups == {"behaviors": f"{app_id}-contexts", "replans": app_id}


def test_ports_and_probes_are_the_ones_the_worker_serves() -> None:
    port = int(config()["INTENTSTREAM_METRICS_PORT"])
    served = set(re.findall(r'self\.path == "(/\w+)"', (REPO_ROOT / "stream" / "metrics.py").read_text()))
    assert served == {"/metrics", "/healthz", "/readyz"}
    for container in containers():
        if container["name"] == "vllm":
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": port}
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["port"] == "metrics"
            assert get["path"] in served
        assert container["args"][0] == "worker"


def test_worker_roles_match_the_cli() -> None:
    from intentstream.cli import build_parser

    parser = build_parser()
    for container in containers():
        if container["name"] != "vllm":
            parser.parse_args(container["args"])  # exits (fails the test) on an unknown flag


def test_overlays_point_at_files_that_exist() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for ref in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]:
            assert (kustomization.parent / ref).exists(), f"{kustomization}: {ref}"


def test_dashboard_queries_only_metrics_the_worker_exports() -> None:
    from intentstream.stream.ingest import ContextService
    from intentstream.stream.metrics import PlannerCounters, WorkerCollector

    collector = WorkerCollector(
        ContextService(Settings(), "127.0.0.1:1", scan_end_offsets=False), PlannerCounters()
    )
    exported = {f.name + ("_total" if f.type == "counter" else "") for f in collector.collect()}
    dashboard = orjson.loads((REPO_ROOT / "deploy" / "grafana" / "intentstream.json").read_bytes())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"intentstream_\w+", target["expr"])
    }
    assert queried
    assert queried <= exported
