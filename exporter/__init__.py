"""Prometheus exporter for the status of Tencent Cloud async operations.

The package is in wings, one concern each; data flows one way, and an import-linter contract in
pyproject.toml (run by `python3 dev.py test`) keeps it so:

    cli -> web -> daemon -> polling -> store | exposition -> credentials -> config -> catalogue

- `catalogue`: the only place that knows a product (actions, statuses, quotas, list APIs).
- `config`: the config file's schema and checks, and the plain data built from it.
- `credentials`: where keys come from and TC3 signing.
- `store`: the SQLite state file.
- `exposition`: task state and everything `/metrics` renders.
- `polling`: the API client, token buckets, schedulers and discovery sweeps.
- `daemon`: one running exporter wiring those together.
- `web`: the HTTP server, pages, task API and web config.
- `cli`: the program, its flags and subcommands.
- `simulator`: a local stand-in for the Tencent Cloud APIs (tests, benchmarks, `--demo`); it may import only
  `catalogue`, `config` and `credentials`.

At the top: `log` (structured logging) and `buildinfo` (version and revision), which any wing may use.
"""

__version__ = "0.2.0"
