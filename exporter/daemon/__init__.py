"""The daemon: one running exporter, wiring the wings below together.

Owns start-up, config reloads, the watched set (config + registered + discovered) and stopping (`core`).

May import: `exporter.polling` and everything below it; never `exporter.web` or `exporter.cli`.
"""
