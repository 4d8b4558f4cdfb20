"""The artifacts' discovery and quota parts: metrics the exporter declares, the discovery alert and runbook
section, and the dashboard's queries evaluated by promtool over made-up series.
"""

from __future__ import annotations

import re
from pathlib import Path

from exporter.catalogue.products import CDB, MARIADB, REDIS
from tests.ops_artifacts import (
    BUCKET_METRICS,
    DISCOVERY_METRICS,
    RUNBOOK,
    alert_rules,
    assert_declared_by_the_exporter,
    by_title,
    promtool_expr_test,
)
from tests.promql import (
    iter_panels,
    load_dashboard,
    metric_names,
    panel_queries,
)

# --- discovery -------------------------------------------------------------------------------------------


def test_discovery_metrics_are_declared_by_the_exporter() -> None:
    assert_declared_by_the_exporter(DISCOVERY_METRICS, "tencentcloud_discovery_")


def test_bucket_metrics_are_declared_by_the_exporter() -> None:
    assert_declared_by_the_exporter(BUCKET_METRICS, "tencentcloud_api_current_")


def test_discovery_alert_fires_per_sweep_on_three_failed_sweeps() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "TencentCloudDiscoveryFailing")
    assert metric_names(rule["expr"]) == {"tencentcloud_discovery_consecutive_failed_sweeps"}
    pattern = r"max by \(account, product, cloud_region\) \(\w+\) >= 3\s*$"
    assert re.search(pattern, rule["expr"]), rule["expr"]
    assert rule["labels"]["severity"] == "warning"
    description = rule["annotations"]["description"]
    for part in (
        "$labels.account",
        "$labels.product",
        "$labels.cloud_region",
        "$value",
        "tencentcloud_discovery_errors_total{account=%q,",
    ):
        assert part in description, part


def test_runbook_lists_the_permissions_discovery_needs() -> None:
    from exporter.catalogue.products import DISCOVERABLE

    section = RUNBOOK.read_text(encoding="utf-8").split("## TencentCloudDiscoveryFailing\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert DISCOVERABLE
    for product in DISCOVERABLE:
        assert product.listing is not None
        # CAM names each product's actions after its API host: <service>:<Action>.
        assert f"`{product.api_service}:{product.listing.action}`" in section, product.name


def test_dashboard_shows_discovery_and_operations_by_instance() -> None:
    dashboard = load_dashboard()
    panels = {p["title"]: p for p in iter_panels(dashboard)}
    expected = {
        "Discovery": "row",
        "Discovered tasks": "stat",
        "Discovery health": "table",
        "Discovery errors by code": "timeseries",
        "Operations by instance and type": "table",
    }
    assert {title: panels[title]["type"] for title in expected if title in panels} == expected
    health = " ".join(t["expr"] for t in panels["Discovery health"]["targets"])
    for metric in (
        "tencentcloud_discovery_last_success_timestamp_seconds",
        "tencentcloud_discovery_consecutive_failed_sweeps",
        "tencentcloud_discovery_tasks",
        "tencentcloud_discovery_last_sweep_duration_seconds",
    ):
        assert metric in health, metric
    (operations,) = (t["expr"] for t in panels["Operations by instance and type"]["targets"])
    assert "group_left (phase)" in operations
    for variable in ("$product", "$cloud_region", "$source"):
        assert variable in operations, variable
    source = next(v for v in dashboard["templating"]["list"] if v["name"] == "source")
    # "All" must also match tasks without the label, which an expansion into the values found would not.
    assert source["includeAll"]
    assert source["allValue"] == ".*"


def test_discovery_and_operations_queries_compute_the_expected_values(tmp_path: Path) -> None:
    """promtool evaluates the new panels' queries over made-up series and compares their answers."""
    builtins = {"__rate_interval": "5m"}
    queries = panel_queries(builtins=builtins)
    only_discovered = panel_queries(overrides={"source": "discovered"}, builtins=builtins)
    only_ops = panel_queries(overrides={"account": "ops"}, builtins=builtins)
    gz = f'account="default",product="{CDB.name}",cloud_region="ap-guangzhou"'
    sh = f'account="ops",product="{REDIS.name}",cloud_region="ap-shanghai"'
    flow = f'account="default",product="{MARIADB.name}",cloud_region="ap-shanghai",task_id="9"'
    series = {
        # cdb-a has two BACKUP operations running (one configured, one discovered) and an UPGRADE done.
        f'tencentcloud_task_info{{{gz},task_id="1",instance_id="cdb-a",task_type="BACKUP",source="config",'
        'info="",team="dba"}': "1+0x10",
        f'tencentcloud_task_info{{{gz},task_id="2",instance_id="cdb-a",task_type="BACKUP",source="discovered",'
        'info="copying"}': "1+0x10",
        f'tencentcloud_task_info{{{gz},task_id="3",instance_id="cdb-a",task_type="UPGRADE",'
        'source="discovered",info=""}': "1+0x10",
        f'tencentcloud_task_phase{{{gz},task_id="1",phase="running"}}': "1+0x10",
        f'tencentcloud_task_phase{{{gz},task_id="1",phase="succeeded"}}': "0+0x10",
        f'tencentcloud_task_phase{{{gz},task_id="2",phase="running"}}': "1+0x10",
        f'tencentcloud_task_phase{{{gz},task_id="3",phase="succeeded"}}': "1+0x10",
        # A configured MariaDB flow: its status API gives neither instance nor type.
        f'tencentcloud_task_info{{{flow},source="config",info=""}}': "1+0x10",
        f'tencentcloud_task_phase{{{flow},phase="failed"}}': "1+0x10",
        # Discovery: cdb healthy, its sweeps list five watched tasks (configured ones too); redis, swept
        # with account ops, throttled for four sweeps.
        f"tencentcloud_discovery_sweeps_total{{{gz}}}": "0+1x10",
        f"tencentcloud_discovery_consecutive_failed_sweeps{{{gz}}}": "0+0x10",
        f"tencentcloud_discovery_tasks{{{gz}}}": "5+0x10",
        f"tencentcloud_discovery_sweeps_total{{{sh}}}": "0+1x10",
        f"tencentcloud_discovery_consecutive_failed_sweeps{{{sh}}}": "0 0 0 0 0 0 0 1 2 3 4",
        f'tencentcloud_discovery_errors_total{{{sh},code="RequestLimitExceeded"}}': "0 0 0 0 0 0 0 1 2 3 4",
        f"tencentcloud_discovery_tasks{{{sh}}}": "0+0x10",
    }
    expected: list[tuple[str, list[tuple[str, float]]]] = [
        (
            by_title(queries, "Operations by instance and type"),
            [
                (f'{{{gz},instance_id="cdb-a",task_type="BACKUP",phase="running"}}', 2),
                (f'{{{gz},instance_id="cdb-a",task_type="UPGRADE",phase="succeeded"}}', 1),
                (
                    f'{{account="default",product="{MARIADB.name}",cloud_region="ap-shanghai",phase="failed"}}',
                    1,
                ),
            ],
        ),
        (
            by_title(only_discovered, "Operations by instance and type"),
            [
                (f'{{{gz},instance_id="cdb-a",task_type="BACKUP",phase="running"}}', 1),
                (f'{{{gz},instance_id="cdb-a",task_type="UPGRADE",phase="succeeded"}}', 1),
            ],
        ),
        # Tasks 2 and 3: task 1 was configured.
        (by_title(queries, "Discovered tasks"), [("{}", 2)]),
        (by_title(queries, "Discovery health", "B"), [(f"{{{gz}}}", 0), (f"{{{sh}}}", 4)]),
        (by_title(queries, "Discovery health", "C"), [(f"{{{gz}}}", 5), (f"{{{sh}}}", 0)]),
        # The account variable narrows every panel to that account's series.
        (by_title(only_ops, "Discovery health", "B"), [(f"{{{sh}}}", 4)]),
        (by_title(only_ops, "Discovered tasks"), [("{}", 0)]),
        # Errors where there are some, a 0 line for products whose sweeps all succeed.
        (
            f"({by_title(queries, 'Discovery errors by code')}) > bool 0",
            [
                (f'{{account="ops",product="{REDIS.name}",code="RequestLimitExceeded"}}', 1),
                (f'{{account="default",product="{CDB.name}"}}', 0),
            ],
        ),
    ]
    promtool_expr_test(tmp_path, series, expected)


def test_quota_queries_compute_the_expected_values(tmp_path: Path) -> None:
    """promtool evaluates the quota panels' queries: one row per bucket, sharded replicas added up."""
    builtins = {"__rate_interval": "5m"}
    queries = panel_queries(builtins=builtins)
    only_prod = panel_queries(overrides={"account": "prod"}, builtins=builtins)
    table = "Quota utilisation per account and endpoint"
    flow = f'product="{MARIADB.name}",action="DescribeFlow"'
    sh = f'{flow},api_endpoint="mariadb.ap-shanghai.tencentcloudapi.com"'
    gz = f'{flow},api_endpoint="mariadb.ap-guangzhou.tencentcloudapi.com"'
    cdb = (
        f'account="default",product="{CDB.name}",action="DescribeAsyncRequestInfo",'
        'api_endpoint="cdb.tencentcloudapi.com"'
    )
    prod_sh, prod_gz, staging_sh = f'account="prod",{sh}', f'account="prod",{gz}', f'account="staging",{sh}'
    series = {
        # prod at ap-shanghai: 18/s of 20/s, its bucket slowed to 14/s after throttling.
        f"tencentcloud_api_requests_total{{{prod_sh}}}": "0+1080x10",
        f"tencentcloud_api_rate_limit_requests_per_second{{{prod_sh}}}": "20+0x10",
        f"tencentcloud_api_current_rate_limit_requests_per_second{{{prod_sh}}}": "14+0x10",
        f"tencentcloud_api_throttled_requests_total{{{prod_sh}}}": "0+60x10",
        # prod at ap-guangzhou and staging at ap-shanghai: 5/s of 20/s each, their own buckets.
        f"tencentcloud_api_requests_total{{{prod_gz}}}": "0+300x10",
        f"tencentcloud_api_rate_limit_requests_per_second{{{prod_gz}}}": "20+0x10",
        f"tencentcloud_api_current_rate_limit_requests_per_second{{{prod_gz}}}": "20+0x10",
        f"tencentcloud_api_requests_total{{{staging_sh}}}": "0+300x10",
        f"tencentcloud_api_rate_limit_requests_per_second{{{staging_sh}}}": "20+0x10",
        f"tencentcloud_api_current_rate_limit_requests_per_second{{{staging_sh}}}": "20+0x10",
    }
    # Two shards share cdb's 40/s: 20/s each, 12/s sent by each.
    for instance in ("exporter-0", "exporter-1"):
        replica = f'instance="{instance}",{cdb}'
        series[f"tencentcloud_api_requests_total{{{replica}}}"] = "0+720x10"
        series[f"tencentcloud_api_rate_limit_requests_per_second{{{replica}}}"] = "20+0x10"
        series[f"tencentcloud_api_current_rate_limit_requests_per_second{{{replica}}}"] = "20+0x10"
    every_bucket = [f"{{{b}}}" for b in (prod_sh, prod_gz, staging_sh, cdb)]
    expected: list[tuple[str, list[tuple[str, float]]]] = [
        (by_title(queries, table, "A"), list(zip(every_bucket, (18, 5, 5, 24), strict=True))),
        (by_title(queries, table, "B"), list(zip(every_bucket, (20, 20, 20, 40), strict=True))),
        (by_title(queries, table, "C"), list(zip(every_bucket, (14, 20, 20, 40), strict=True))),
        (by_title(queries, table, "D"), list(zip(every_bucket, (0.9, 0.25, 0.25, 0.6), strict=True))),
        (by_title(only_prod, table, "D"), [(f"{{{prod_sh}}}", 0.9), (f"{{{prod_gz}}}", 0.25)]),
        (
            by_title(queries, "Requests vs rate limits per bucket", "C"),
            list(zip(every_bucket, (14, 20, 20, 40), strict=True)),
        ),
        # Throttled where it happens, a 0 line for every other bucket that was called.
        (
            by_title(queries, "Throttled requests by account and endpoint"),
            list(zip(every_bucket, (1, 0, 0, 0), strict=True)),
        ),
    ]
    promtool_expr_test(tmp_path, series, expected)
