"""The state store: the SQLite file that keeps registered tasks and what was seen of every task across
restarts.

Owns the schema and its migrations (`schema`, `legacy` for version 1 files), the row checks that treat the
file as untrusted input (`rows`), the lock that keeps a second daemon off the file (`lock`), and the
`Store` itself (`database`).

May import: `exporter.config`, `exporter.catalogue`.
"""
