"""The product table of README.md and docs/products.md, made from the catalogue (tests/test_catalogue.py keeps
both copies equal to it)."""

from __future__ import annotations

from exporter.catalogue.phases import FINAL_PHASES, PHASES
from exporter.catalogue.products import AUDIT_TRAIL, PRODUCTS, Product


def catalogue_table() -> str:
    """The product table of README.md and docs/products.md, from the catalogue (a test keeps both copies equal
    to it)."""
    rows = [
        "| Product | Action (version) | ID | Statuses by phase (**final**) | Also exported | Quota "
        "| Watch key | Discovery: list action (quota) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in PRODUCTS:
        kind = "integer" if s.id_kind.integer else "string"
        if s.id_kind.request_id:
            kind = "string: the RequestId of the call that started it"
        id_cell = f"`{s.id_param}`, {kind}"
        if s.id_kind.pair:
            id_cell = f"`{s.id_param}` and the task's `Id`, written `mssql-njj2mtpl:23517`"
        rows.append(
            f"| {s.title} (`{s.name}`) | `{s.action}` ({s.version}) | {id_cell} "
            f"| {_phases_cell(s)} | {', '.join(s.extra_fields) or '-'} "
            f"| {s.default_rate_limit:g}/s | `{s.watch_key}` | {_listing_cell(s)} |"
        )
    return "\n".join(rows) + "\n"


def _phases_cell(product: Product) -> str:
    """`pending: initial; running: running; succeeded: **success**; ...`, in the phases' order."""
    groups = []
    for phase in PHASES:
        words = [s for s, p in product.phases if p is phase]
        if words:
            final = phase in FINAL_PHASES
            groups.append(f"{phase}: " + ", ".join(f"**{w}**" if final else w for w in words))
    return "; ".join(groups)


def _listing_cell(product: Product) -> str:
    listing = product.listing
    if listing is None and product.audit_events:
        trail = AUDIT_TRAIL
        return (
            f"the audit trail: CloudAudit `{trail.action}` ({trail.default_rate_limit:g}/s, shared), "
            f"RequestIds of {len(product.audit_events)} calls"
        )
    if listing is None:
        return product.unlisted_why
    note = f"; {listing.note}" if listing.note else ""
    cell = f"`{listing.action}` ({listing.default_rate_limit:g}/s{note})"
    first = listing.instances
    if first is not None:
        cell = f"`{first.action}` ({first.default_rate_limit:g}/s; {first.note}), then {cell}"
    return cell
