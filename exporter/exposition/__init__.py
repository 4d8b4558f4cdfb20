"""Exposition: what `/metrics` shows and how it is rendered.

Owns each task's state and its pre-rendered lines (`state`), the task metric families and their label sets
(`families`: the only place task labels are built), the exporter's own counters and gauges and the framing
of a whole scrape (`metrics`), and shared renders for concurrent scrapes (`scrape`).

May import: `exporter.config`, `exporter.catalogue`, `exporter.buildinfo`. It reads token buckets through
a protocol, never the polling wing.
"""
