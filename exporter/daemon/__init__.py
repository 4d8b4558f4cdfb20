"""The daemon: one running exporter, wiring the wings below together.

Owns start-up, config reloads, the watched set (config + registered + discovered), readiness and stopping
(`core`), and each account's credentials on /metrics (`credentialstate`).

May import: `exporter.polling` and everything below it; never `exporter.web` or `exporter.cli`.
"""
