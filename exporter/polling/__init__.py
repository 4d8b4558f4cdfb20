"""Polling: asking Tencent Cloud about each task inside the quotas.

Owns the signed API client and how an answer is classified (`client`), the token buckets that keep every
(account, product, action, endpoint) lane inside its quota (`ratelimit`), the per-lane schedulers that decide
which task is due next (`scheduler`), the sweeps over the list APIs (`sweeper`; `instancesweep` for the
two-step lists, busy instances then each one's tasks) and over the audit trail (`auditsweep`: CloudAudit, for
the products whose task ID is a call's RequestId), and the discovered tasks they find (`discovery`).

May import: `exporter.exposition`, `exporter.store`, `exporter.credentials`, `exporter.config`,
`exporter.catalogue`, `exporter.log`.
"""
