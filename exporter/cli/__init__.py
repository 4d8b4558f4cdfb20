"""The command line: the `tencentcloud-task-exporter` program and its subcommands.

Owns the daemon's flags and its run (`main`, `flags`), `healthcheck`, `register`, and the one-shot `get` and
`wait` (`getwait` on the engine in `oneshot`), plus the small HTTP client they share (`httpcall`).

May import: every other wing; nothing imports it.
"""
