"""The Grafana dashboard of tencentcloud-task-exporter, as code (grafana-foundation-sdk); the entry script
`grafana/generate_dashboard.py` writes or checks the committed JSON.

- `common`: identity, data source, status sets, label selectors, status codes; one query, thresholds;
- `queries`: the PromQL of every panel;
- `panels`: the stat, table and time-series builders the rows share;
- one module per row or pair of rows: `overview`, `tasks`, `api`, `discovery`, `health`;
- `variables`: the dashboard's variables;
- `build`: the dashboard put together, and `render`, its JSON text.
"""

from .build import build_dashboard, render, sections

__all__ = ["build_dashboard", "render", "sections"]
