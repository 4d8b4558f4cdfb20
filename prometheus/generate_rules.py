#!/usr/bin/env python3
"""Render the alerting rules for the job selector you scrape the exporter with, mixin style.

``prometheus/alerts.yml`` is the source of the rules and also their default rendering: the one for
``job="tencentcloud-task-exporter"``, the job of ``prometheus.example.yml`` and of the Kubernetes PodMonitor.
Only the expressions that must tell the exporter's targets apart from every other target, those over
``up`` (TencentCloudExporterDown's ``up == 0`` and ``absent(up)``), carry the job selector; every other
metric is the exporter's own. Rendering replaces that selector and nothing else.

    # A Prometheus rule file for the job you scrape the exporter with:
    python3 prometheus/generate_rules.py --job-selector 'job="kubernetes-pods"' > my-alerts.yml
    # The same rules as a PrometheusRule (Prometheus Operator):
    python3 prometheus/generate_rules.py --prometheusrule --job-selector 'job="my-job"' > prometheusrule.yaml
    # Rewrite deploy/kubernetes/prometheusrule.yaml after editing alerts.yml or podmonitor.yaml:
    python3 prometheus/generate_rules.py --update
    # Exit 1 when deploy/kubernetes/prometheusrule.yaml is stale (tests/test_deploy_kubernetes.py runs this):
    python3 prometheus/generate_rules.py --check

The committed PrometheusRule uses the job the PodMonitor (deploy/kubernetes/podmonitor.yaml) sets, so the
two always agree. Needs only PyYAML.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "prometheus" / "alerts.yml"
KUBERNETES = REPO / "deploy" / "kubernetes"
PODMONITOR = KUBERNETES / "podmonitor.yaml"
PROMETHEUSRULE = KUBERNETES / "prometheusrule.yaml"

DEFAULT_JOB = "tencentcloud-task-exporter"
DEFAULT_JOB_SELECTOR = f'job="{DEFAULT_JOB}"'
RULE_NAME = "tencentcloud-task-exporter"

# One PromQL label matcher: name, operator, double-quoted string (escapes allowed); a selector is a
# comma-separated list of them, as written between the braces of `up{...}`.
_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\\n]|\\.)*"\s*'
_SELECTOR = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*,?\s*")


class RenderError(ValueError):
    """The selector or the source rules cannot be rendered."""


def check_selector(selector: str) -> str:
    """``selector`` if it is one or more PromQL label matchers (``job="x"``, ``job=~"a|b",namespace="y"``)."""
    if not _SELECTOR.fullmatch(selector):
        raise RenderError(
            f"--job-selector {selector!r}: expected PromQL label matchers such as "
            f"'{DEFAULT_JOB_SELECTOR}' or 'job=~\"a|b\",namespace=\"monitoring\"'"
        )
    return selector.strip()


def _without_expr(document: Any) -> Any:
    """The rule file with every `expr` left out: what a rendering must leave exactly as it was."""
    return [
        [{key: value for key, value in rule.items() if key != "expr"} for rule in group["rules"]]
        for group in document["groups"]
    ]


def render_alerts(job_selector: str = DEFAULT_JOB_SELECTOR, source: str | None = None) -> str:
    """The rule file (text of alerts.yml, comments kept) with the job selector ``job_selector``."""
    selector = check_selector(job_selector)
    text = ALERTS.read_text(encoding="utf-8") if source is None else source
    original = yaml.safe_load(text)
    exprs = [rule["expr"] for group in original["groups"] for rule in group["rules"]]
    if not any(DEFAULT_JOB_SELECTOR in expr for expr in exprs):
        raise RenderError(f"no expression of {ALERTS.name} selects {DEFAULT_JOB_SELECTOR}: nothing to render")
    rendered = text.replace(DEFAULT_JOB_SELECTOR, selector)
    # The default selector may appear in expressions and comments only: an annotation or label holding it
    # would change meaning with the selector, so it is refused rather than rewritten.
    if _without_expr(yaml.safe_load(rendered)) != _without_expr(original):
        raise RenderError(f"{DEFAULT_JOB_SELECTOR} appears outside an `expr` of {ALERTS.name}")
    return rendered


def podmonitor_job(path: Path | None = None) -> str:
    """The literal `job` label the PodMonitor gives its targets (a relabeling with targetLabel: job)."""
    path = PODMONITOR if path is None else path
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    jobs = {
        relabeling["replacement"]
        for endpoint in document["spec"]["podMetricsEndpoints"]
        for relabeling in endpoint.get("relabelings", [])
        if relabeling.get("targetLabel") == "job" and not relabeling.get("sourceLabels")
    }
    if len(jobs) != 1:
        raise RenderError(f"{path}: expected one literal job relabeling across its endpoints, found {jobs}")
    return str(jobs.pop())


def render_prometheusrule(job_selector: str, committed: bool = False) -> str:
    """alerts.yml rendered for ``job_selector`` as a PrometheusRule, its comments kept.

    ``committed``: the header is that of deploy/kubernetes/prometheusrule.yaml, for the PodMonitor's job.
    """
    selector = check_selector(job_selector)
    rendered = render_alerts(selector)
    lines = rendered.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError:
        raise RenderError(f"{ALERTS.name}: no top-level `groups:` line") from None
    if committed:
        regenerate = f"""\
# Regenerate with `python3 prometheus/generate_rules.py --update` (tests/test_deploy_kubernetes.py fails
# when this file is stale). Job selector: {selector}, the job podmonitor.yaml sets."""
    else:
        regenerate = f"""\
# Job selector: {selector}. Regenerate with
#   python3 prometheus/generate_rules.py --prometheusrule --job-selector '{selector}'"""
    header = f"""\
# GENERATED from prometheus/alerts.yml by prometheus/generate_rules.py; do not edit by hand.
{regenerate}
# Thresholds marked TUNE, and every rule's documentation, are in prometheus/alerts.yml and docs/runbook.md.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {RULE_NAME}
  labels:
    app.kubernetes.io/name: tencentcloud-task-exporter
    app.kubernetes.io/component: alerting-rules
spec:
"""
    body = "\n".join(f"  {line}" if line.strip() else "" for line in lines[start:])
    return header + body + "\n"


def committed_prometheusrule() -> str:
    """What deploy/kubernetes/prometheusrule.yaml must contain: the rules for the PodMonitor's job."""
    return render_prometheusrule(f'job="{podmonitor_job()}"', committed=True)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--job-selector",
        default=None,
        help=f"PromQL label matchers of the exporter's targets (default: {DEFAULT_JOB_SELECTOR}; with "
        "--update/--check: the job podmonitor.yaml sets)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--prometheusrule", action="store_true", help="print a PrometheusRule, not a rule file")
    mode.add_argument("--update", action="store_true", help=f"rewrite {_shown(PROMETHEUSRULE)}")
    mode.add_argument("--check", action="store_true", help="exit 1 if the committed renderings are stale")
    args = parser.parse_args(argv)
    try:
        if args.update or args.check:
            if args.job_selector is not None:
                parser.error(
                    "--update/--check use the job podmonitor.yaml sets; --job-selector is for printing"
                )
            expected = committed_prometheusrule()
            if args.update:
                PROMETHEUSRULE.write_text(expected, encoding="utf-8")
                return 0
            stale = []
            if render_alerts() != ALERTS.read_text(encoding="utf-8"):
                stale.append(_shown(ALERTS))
            if not PROMETHEUSRULE.exists() or PROMETHEUSRULE.read_text(encoding="utf-8") != expected:
                stale.append(_shown(PROMETHEUSRULE))
            for path in stale:
                print(f"{path} is stale: run python3 prometheus/generate_rules.py --update", file=sys.stderr)
            return 1 if stale else 0
        selector = args.job_selector if args.job_selector is not None else DEFAULT_JOB_SELECTOR
        sys.stdout.write(render_prometheusrule(selector) if args.prometheusrule else render_alerts(selector))
        return 0
    except RenderError as error:
        print(f"generate_rules.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
