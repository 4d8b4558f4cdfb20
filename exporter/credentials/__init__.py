"""Credentials: where each account's keys come from and how a request is signed with them.

Owns the credential chain (`chain`: environment, profile file, CVM role, STS AssumeRole, TKE OIDC, with
their sources in `profile`, `sources` and `expiring`, on the shared types of `base`), one provider per
configured account (`accounts`; an account whose chain fails to open is retried with backoff by
`pending`), TC3-HMAC-SHA256 signing (`signing`), which the simulator also uses to verify signatures, and
reading an answer from the cloud within a size limit (`bodies`), which polling uses too. Secrets stay
inside this wing's types and are never logged.

May import: `exporter.config`, `exporter.catalogue`.
"""
