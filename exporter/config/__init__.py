"""Configuration: the YAML file's schema, its validation and the plain data the rest of the exporter runs on.

Owns parsing and checking the config file (`parser`, with `values`, `accounts`, `discovery` and
`auditconfig` (`discovery.cloudaudit`) for their sections), the problem reporting every untrusted input
shares (`validation`: file, key path, expectation), and the model types built from it: watched tasks and
their keys, lanes (`lanes`: account, product, action, endpoint) and shards (`sharding`).

May import: `exporter.catalogue`.
"""
