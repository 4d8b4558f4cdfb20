"""The Kubernetes kustomize base (deploy/kubernetes) and the rules generated for it.

Core kinds are validated against the Kubernetes OpenAPI schemas that ``kubernetes-validate`` ships, in strict
mode (unknown fields are errors). It has no schemas for the Prometheus Operator's CRDs, so the fields of the
PodMonitor and the PrometheusRule that matter are checked here, and the PrometheusRule's rules go through
promtool. The base is kept to ``resources:`` so this file renders it without kustomize; where ``kubectl`` is
installed, ``kubectl kustomize`` must produce the same objects (a workstation without it skips; CI fails).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import exporter
from exporter.config.parser import parse_config
from tests.helpers import require_binary, require_module

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
ALERTS = ROOT / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "prometheus" / "alerts_test.yml"
GENERATOR = ROOT / "prometheus" / "generate_rules.py"

NAME = "tencentcloud-task-exporter"
CORE_KINDS = {"Service", "StatefulSet", "NetworkPolicy", "Secret", "ConfigMap"}
MONITORING_KINDS = {"PodMonitor", "PrometheusRule"}
# The oldest Kubernetes the base supports (the pod-index label needs 1.28; 1.30 is the oldest release still
# in TKE's support window) and the newest kubernetes-validate knows.
OLDEST_KUBERNETES = "1.30.0"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_rules", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = load_generator()


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# --- rendering the base ----------------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    data = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def render_base() -> list[dict[str, Any]]:
    """What `kustomize build deploy/kubernetes` gives for a kustomization of local `resources:` only."""
    data = kustomization()
    unsupported = set(data) - {"apiVersion", "kind", "resources"}
    assert not unsupported, (
        f"kustomization.yaml uses {sorted(unsupported)}: extend render_base() in this test to render it"
    )
    documents = []
    for resource in data["resources"]:
        path = BASE / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which is not a file of the base"
        documents.extend(load_documents(path))
    return documents


def examples() -> list[dict[str, Any]]:
    return [d for path in sorted(BASE.glob("*.example.yaml")) for d in load_documents(path)]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [document] = [d for d in documents if d["kind"] == kind]
    return document


def key(document: dict[str, Any]) -> tuple[str, str, str]:
    return document["apiVersion"], document["kind"], document["metadata"]["name"]


def test_kustomization_lists_every_manifest_and_no_example() -> None:
    data = kustomization()
    assert data["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert data["kind"] == "Kustomization"
    resources = data["resources"]
    assert len(resources) == len(set(resources))
    files = {p.name for p in BASE.glob("*.y*ml")} - {"kustomization.yaml"}
    example_files = {f for f in files if f.endswith(".example.yaml")}
    assert example_files == {"secret.example.yaml", "configmap.example.yaml"}
    assert not example_files & set(resources), "examples must never be applied with the base"
    assert set(resources) == files - example_files, "a manifest that is neither a resource nor an example"
    rendered = render_base()
    assert {d["kind"] for d in rendered} == CORE_KINDS - {"Secret", "ConfigMap"} | MONITORING_KINDS
    assert len({key(d) for d in rendered}) == len(rendered), "two objects with the same name and kind"
    assert all("namespace" not in d["metadata"] for d in rendered + examples()), (
        "the user picks the namespace"
    )


def test_kubectl_kustomize_builds_the_same_objects() -> None:
    # The machine image has kubectl (Google Cloud SDK); without it a workstation skips and CI fails.
    kubectl = require_binary("kubectl")
    result = run([kubectl, "kustomize", str(BASE)])
    assert result.returncode == 0, result.stderr
    built = sorted(load_documents_text(result.stdout), key=key)
    assert built == sorted(render_base(), key=key)


def load_documents_text(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


# --- core kinds: Kubernetes' own schemas -----------------------------------------------------------------


def kubernetes_versions() -> list[str]:
    require_module("kubernetes_validate", "pip install the project's 'test' extra")
    import kubernetes_validate

    return sorted({OLDEST_KUBERNETES, kubernetes_validate.latest_version()})


def test_every_object_is_a_kind_this_file_validates() -> None:
    for document in render_base() + examples():
        assert document["kind"] in CORE_KINDS | MONITORING_KINDS, document["kind"]


@pytest.mark.parametrize("kind", sorted(CORE_KINDS))
def test_core_objects_validate_strictly(kind: str) -> None:
    require_module("kubernetes_validate", "pip install the project's 'test' extra")
    import kubernetes_validate

    documents = [d for d in render_base() + examples() if d["kind"] == kind]
    assert documents, f"no {kind} in the base or its examples"
    for version in kubernetes_versions():
        for document in documents:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{kind} {document['metadata']['name']} on Kubernetes {version}: {error.message}")


def test_schema_validation_catches_an_unknown_field() -> None:
    """Strict mode is on: a misspelt field would not pass silently."""
    require_module("kubernetes_validate", "pip install the project's 'test' extra")
    import kubernetes_validate

    statefulset = one(render_base(), "StatefulSet")
    broken = {**statefulset, "spec": {**statefulset["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, OLDEST_KUBERNETES, strict=True)


# --- how the objects fit together ------------------------------------------------------------------------


def pod_labels() -> dict[str, str]:
    labels = one(render_base(), "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert isinstance(labels, dict)
    return labels


def container() -> dict[str, Any]:
    [only] = one(render_base(), "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def container_port_names() -> set[str]:
    return {port["name"] for port in container()["ports"]}


def selects(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def test_statefulset_runs_this_version_and_mounts_the_examples() -> None:
    statefulset = one(render_base(), "StatefulSet")
    spec = statefulset["spec"]
    assert selects(spec["selector"]["matchLabels"], pod_labels())
    image = container()["image"]
    assert image == f"{NAME}:{exporter.__version__}", "the image tag is the released version"
    # The Secret and the ConfigMap the examples create are the ones the pods use.
    secret, configmap = one(examples(), "Secret"), one(examples(), "ConfigMap")
    assert [e["secretRef"]["name"] for e in container()["envFrom"]] == [secret["metadata"]["name"]]
    [volume] = [v for v in spec["template"]["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    [mount] = [m for m in container()["volumeMounts"] if m["name"] == volume["name"]]
    config_file = next(a for a in container()["args"] if a.startswith("--config.file=")).split("=", 1)[1]
    assert config_file == f"{mount['mountPath']}/config.yaml"
    assert set(configmap["data"]) == {"config.yaml"}
    # The pod stays locked down.
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    context = container()["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert not any(a.startswith("--web.enable-lifecycle") for a in container()["args"])


def test_headless_service_selects_the_pods() -> None:
    documents = render_base()
    service, statefulset = one(documents, "Service"), one(documents, "StatefulSet")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert selects(service["spec"]["selector"], pod_labels())
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in container_port_names()


def test_example_config_is_valid() -> None:
    document = yaml.safe_load(one(examples(), "ConfigMap")["data"]["config.yaml"])
    env = {"TENCENTCLOUD_SECRET_ID": "AKIDEXAMPLE", "TENCENTCLOUD_SECRET_KEY": "example"}
    config = parse_config(document, "configmap.example.yaml", env)
    assert config.tasks


def test_example_secret_holds_obviously_fake_keys() -> None:
    secret = one(examples(), "Secret")
    data = secret["stringData"]
    assert {"TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"} <= set(data)
    assert all("EXAMPLE" in value for value in data.values())
    assert "data" not in secret


# --- PodMonitor ------------------------------------------------------------------------------------------


def podmonitor() -> dict[str, Any]:
    return one(render_base(), "PodMonitor")


def test_podmonitor_scrapes_every_pod_with_a_fixed_job() -> None:
    monitor = podmonitor()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] == NAME
    spec = monitor["spec"]
    assert set(spec["selector"]) == {"matchLabels"}
    assert selects(spec["selector"]["matchLabels"], pod_labels())
    assert "jobLabel" not in spec, "jobLabel copies a pod label; the job is set by relabeling"
    [endpoint] = spec["podMetricsEndpoints"]
    assert endpoint["port"] in container_port_names()
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is False
    assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "job", "replacement": NAME}], (
        "a literal job, what the alert rules' job selector expects"
    )
    assert GEN.podmonitor_job() == NAME


# --- NetworkPolicy ---------------------------------------------------------------------------------------


def test_networkpolicy_admits_prometheus_and_labelled_clients_only() -> None:
    policy = one(render_base(), "NetworkPolicy")
    spec = policy["spec"]
    assert selects(spec["podSelector"]["matchLabels"], pod_labels())
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["http"]
    assert rule["ports"][0]["port"] in container_port_names()
    prometheus, clients = rule["from"]
    # Prometheus: one peer with both selectors (AND); as two peers, any pod of the namespace would pass.
    assert set(prometheus) == {"namespaceSelector", "podSelector"}
    assert prometheus["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert prometheus["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    # Task API clients: labelled pods of the exporter's own namespace.
    assert clients == {"podSelector": {"matchLabels": {f"{NAME}/client": "true"}}}
    for peer in rule["from"]:
        assert "ipBlock" not in peer
        for selector in peer.values():
            assert selector.get("matchLabels"), "an empty selector would admit everything"


# --- PrometheusRule --------------------------------------------------------------------------------------


def prometheusrule() -> dict[str, Any]:
    return one(render_base(), "PrometheusRule")


def test_prometheusrule_is_generated_from_alerts_yml() -> None:
    committed = (BASE / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == GEN.committed_prometheusrule(), (
        "deploy/kubernetes/prometheusrule.yaml is stale: run `python3 prometheus/generate_rules.py --update`"
    )
    assert GEN.main(["--check"]) == 0
    # The same rules as alerts.yml rendered for the PodMonitor's job, which here is the default one.
    alerts = yaml.safe_load(GEN.render_alerts(f'job="{GEN.podmonitor_job()}"'))
    assert prometheusrule()["spec"] == {"groups": alerts["groups"]}
    assert f'up{{job="{GEN.podmonitor_job()}"}}' in committed


def test_prometheusrule_has_what_the_operator_requires() -> None:
    rule = prometheusrule()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == NAME
    groups = rule["spec"]["groups"]
    assert groups
    assert len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert group["rules"], group["name"]
        for item in group["rules"]:
            if "record" in item:  # a recording rule: level:metric:operations, as Prometheus names them
                assert set(item) <= {"record", "expr", "labels"}
                assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", item["record"])
                assert item["expr"].strip()
                continue
            assert set(item) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
            assert isinstance(item["alert"], str)
            assert isinstance(item["expr"], str)
            assert item["expr"].strip()
            assert item["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description", "runbook_url"} <= set(item["annotations"])
            assert all(isinstance(v, str) for v in item["labels"].values())
            assert all(isinstance(v, str) for v in item["annotations"].values())


def test_prometheusrule_rules_pass_promtool(tmp_path: Path) -> None:
    """The PrometheusRule's groups, as a rule file, pass `promtool check rules` and alerts_test.yml."""
    promtool = require_binary("promtool")
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(prometheusrule()["spec"]), encoding="utf-8")
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    result = run([promtool, "check", "rules", "alerts.yml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([promtool, "test", "rules", ALERTS_TEST.name], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_mode_reports_a_stale_prometheusrule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text(GEN.committed_prometheusrule().replace("> 0.8", "> 0.9"), encoding="utf-8")
    monkeypatch.setattr(GEN, "PROMETHEUSRULE", stale)
    assert GEN.main(["--check"]) == 1
    assert "prometheusrule.yaml is stale" in capsys.readouterr().err
    assert GEN.main(["--update"]) == 0
    assert stale.read_text(encoding="utf-8") == GEN.committed_prometheusrule()
    assert GEN.main(["--check"]) == 0


# --- the job selector, mixin style -----------------------------------------------------------------------


def rules_by_name(text: str) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(text)
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"] if "alert" in rule}


def selects_up(expr: str) -> bool:
    return re.search(r"(?<![\w:])up\s*\{", expr) is not None


def test_default_rendering_is_the_committed_alerts_yml(capsys: pytest.CaptureFixture[str]) -> None:
    committed = ALERTS.read_text(encoding="utf-8")
    assert GEN.render_alerts() == committed
    assert GEN.render_alerts(GEN.DEFAULT_JOB_SELECTOR) == committed
    assert f'job="{NAME}"' == GEN.DEFAULT_JOB_SELECTOR
    assert GEN.main([]) == 0
    assert capsys.readouterr().out == committed


@pytest.mark.parametrize(
    "selector", ['job="kubernetes-pods"', 'job=~"tte-(prod|staging)", namespace="monitoring"']
)
def test_another_job_selector_changes_exactly_the_job_matching_expressions(selector: str) -> None:
    default = rules_by_name(ALERTS.read_text(encoding="utf-8"))
    rendered = rules_by_name(GEN.render_alerts(selector))
    assert list(rendered) == list(default)
    job_matching = {name for name, rule in default.items() if selects_up(rule["expr"])}
    assert job_matching == {"TencentCloudExporterDown"}
    changed = {name for name in default if rendered[name] != default[name]}
    assert changed == job_matching
    for name in job_matching:
        before, after = default[name], rendered[name]
        assert {k: v for k, v in after.items() if k != "expr"} == {
            k: v for k, v in before.items() if k != "expr"
        }
        assert after["expr"] == before["expr"].replace(GEN.DEFAULT_JOB_SELECTOR, selector)
        assert after["expr"].count(f"up{{{selector}}}") == before["expr"].count("up{")
        assert GEN.DEFAULT_JOB_SELECTOR not in after["expr"]


def test_a_rendering_for_another_job_alerts_on_that_job(tmp_path: Path) -> None:
    """promtool: rendered for job="kubernetes-pods", the rules watch that job's targets and no other."""
    promtool = require_binary("promtool")
    (tmp_path / "alerts.yml").write_text(GEN.render_alerts('job="kubernetes-pods"'), encoding="utf-8")
    result = run([promtool, "check", "rules", "alerts.yml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    down = {"alertname": "TencentCloudExporterDown", "eval_time": "10m"}
    runbook_url = rules_by_name(ALERTS.read_text(encoding="utf-8"))[down["alertname"]]["annotations"][
        "runbook_url"
    ]

    def annotations(on: str) -> dict[str, str]:
        return {
            "summary": "The Tencent Cloud task exporter is down.",
            "description": (
                f"Prometheus cannot scrape job kubernetes-pods{on}; no task status is being collected."
            ),
            "runbook_url": runbook_url,
        }

    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "the rendered job's target is down",
                "interval": "1m",
                "input_series": [
                    {"series": 'up{job="kubernetes-pods",instance="a:10123"}', "values": "0+0x10"},
                    {"series": f'up{{job="{NAME}",instance="b:10123"}}', "values": "1+0x10"},
                ],
                "alert_rule_test": [
                    {
                        **down,
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "job": "kubernetes-pods",
                                    "instance": "a:10123",
                                },
                                "exp_annotations": annotations(" on a:10123"),
                            }
                        ],
                    }
                ],
            },
            {
                "name": "only the default job is scraped: the rendered one is absent",
                "interval": "1m",
                "input_series": [{"series": f'up{{job="{NAME}",instance="b:10123"}}', "values": "1+0x10"}],
                "alert_rule_test": [
                    {
                        **down,
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "job": "kubernetes-pods"},
                                "exp_annotations": annotations(""),
                            }
                        ],
                    }
                ],
            },
        ],
    }
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    result = run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheusrule_for_another_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert GEN.main(["--prometheusrule", "--job-selector", 'job="tte-prod"']) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert document["kind"] == "PrometheusRule"
    assert document["spec"] == {"groups": yaml.safe_load(GEN.render_alerts('job="tte-prod"'))["groups"]}
    assert (
        'absent(up{job="tte-prod"})'
        in rules_by_name(yaml.safe_dump(document["spec"]))["TencentCloudExporterDown"]["expr"]
    )


@pytest.mark.parametrize(
    "selector",
    ["", "job", "job=tte", 'job="a"}', 'job="a"} or vector(1) or up{x="', 'job="a\nb"', '"a"', 'job=="a"'],
)
def test_a_malformed_selector_is_refused(selector: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(GEN.RenderError, match="--job-selector"):
        GEN.render_alerts(selector)
    assert GEN.main(["--job-selector", selector]) == 2
    assert "expected PromQL label matchers" in capsys.readouterr().err


def test_the_default_selector_outside_an_expression_is_refused() -> None:
    text = ALERTS.read_text(encoding="utf-8")
    source = text.replace(
        "summary: The Tencent Cloud task exporter is down.",
        f"summary: 'The exporter ({GEN.DEFAULT_JOB_SELECTOR}) is down.'",
    )
    assert source != text
    with pytest.raises(GEN.RenderError, match="outside an `expr`"):
        GEN.render_alerts('job="other"', source=source)
