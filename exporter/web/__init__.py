"""The web: everything served over HTTP.

Owns the aiohttp application (`app`: `/metrics`, the pages, the task API, the lifecycle endpoints), the
pages themselves (`pages`, rendered from the snapshots of `board`, with their stylesheet and script in
`assets` and each status's phase from `phases`), the hardened HTTP server under it (`httpserver`, `listen`,
`framing`, `looperrors`), and the exporter-toolkit web config file (`config` into the plain data of `model`,
with `configcheck`, `tls`, `guard`, `reload`).

May import: `exporter.daemon` and everything below it; never `exporter.cli`.
"""
