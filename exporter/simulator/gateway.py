"""What the API gateway does before a product sees a request: routing, Signature v3 checks, quotas.

The real API picks the product by host name (`mariadb.tencentcloudapi.com`). Every product shares one
simulator address, so the product is the one the request is signed for: the service of the `Authorization`
header's credential scope (`Credential=<id>/<date>/<service>/tc3_request`), which the SDKs set to the product
key (`Product.api_service`: DTS's sync jobs are served by `dts` too), together with `X-TC-Action` and
`X-TC-Version`. A product offers its status action and, where the
catalogue has one, its list action (`Product.listing`); PostgreSQL's are one and the same action.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from exporter.catalogue.listapis import ListApi
from exporter.catalogue.products import BY_NAME, PRODUCTS, Product
from exporter.credentials.signing import (
    SIGNED_HEADERS,
    Credentials,
    ParsedAuthorization,
    canonical_request,
    parse_authorization,
    signature,
    string_to_sign,
    utc_date,
)
from exporter.simulator.errors import ApiError
from exporter.simulator.lateness import Lateness
from exporter.simulator.stats import ActionStats as ActionStats
from exporter.simulator.stats import count as count
from exporter.simulator.stats import held, slide

# The two products the simulator served first keep the bare action as their stats key, because tests, the
# benchmark and its saved results read `actions["DescribeFlow"]` as MariaDB's. Others: `product:Action`.
_BARE_STATS_KEYS: Final = frozenset({"mariadb", "cdb"})


def _apis(product: Product) -> dict[str, str]:
    """A product's actions and their versions: the status action, and the list action if it has one (and
    the busy instances' list of a two-step one)."""
    apis = {product.action: product.version}
    if product.listing is not None:
        apis.setdefault(product.listing.action, product.listing.version)
        if product.listing.instances is not None:
            apis.setdefault(product.listing.instances.action, product.listing.instances.version)
    return apis


# (service, action) -> the product offering it: SQL Server's flows and instance tasks share `sqlserver`, DTS's
# migration and sync jobs `dts`.
_BY_SERVICE_ACTION: Final[Mapping[tuple[str, str], Product]] = {
    (product.api_service, action): product for product in reversed(PRODUCTS) for action in _apis(product)
}


def _of_service(service: str, action: str) -> Product | None:
    """The product of a service offering `action`; without one, the product named so."""
    return _BY_SERVICE_ACTION.get((service, action)) or BY_NAME.get(service)


def _owners() -> dict[tuple[str, str], Product]:
    owners: dict[tuple[str, str], Product] = {}
    for product in PRODUCTS:
        for action, version in _apis(product).items():
            other = owners.setdefault((action, version), product)
            if other is not product:
                raise RuntimeError(f"{action} {version} is both {other.name}'s and {product.name}'s")
    return owners


# (action, version) names one product: what the SDK client that sent the request was made for.
_BY_ACTION_VERSION: Final[Mapping[tuple[str, str], Product]] = _owners()


def stats_key(product: str, action: str) -> str:
    return action if product in _BARE_STATS_KEYS else f"{product}:{action}"


@dataclass(frozen=True)
class Route:
    """Where a request goes: `product` is None when no product offers it; `problem` is its routing error.

    `listing` is the product's list API when `action` is its list action; for PostgreSQL that is also its
    status action, and the request's parameters tell the two apart (`is_list_request`).
    """

    product: Product | None
    stats_key: str
    problem: ApiError | None
    authorization: ParsedAuthorization | None
    action: str = ""
    listing: ListApi | None = None
    instances: bool = False  # the action is the busy instances' list, the first step of `listing`


def _listing_of(product: Product, action: str) -> ListApi | None:
    listing = product.listing
    if listing is None:
        return None
    if listing.action == action or (listing.instances is not None and listing.instances.action == action):
        return listing
    return None


def _is_instances(product: Product, action: str) -> bool:
    listing = product.listing
    return listing is not None and listing.instances is not None and listing.instances.action == action


def route(headers: Mapping[str, str]) -> Route:
    authorization = parse_authorization(headers.get("Authorization", ""))
    scope = authorization.service if authorization else ""
    action, version = headers.get("X-TC-Action", "").strip(), headers.get("X-TC-Version", "").strip()
    product = _of_service(scope, action)
    if product is not None and action in _apis(product):
        key, listing = stats_key(product.name, action), _listing_of(product, action)
        instances = _is_instances(product, action)
        if version == _apis(product)[action]:
            return Route(product, key, None, authorization, action, listing, instances)
        problem = ApiError(
            "NoSuchVersion", f"The requested version `{version}` of service `{scope}` does not exist."
        )
        return Route(product, key, problem, authorization, action, listing, instances)
    owner = _BY_ACTION_VERSION.get((action, version))
    if owner is not None:
        # The client was made for `owner` but signed for another service (or the scope is unreadable).
        problem = ApiError("AuthFailure.InvalidAuthorization", "`Service` in Credential not valid.")
        key = stats_key(owner.name, action)
        return Route(
            owner,
            key,
            problem,
            authorization,
            action,
            _listing_of(owner, action),
            _is_instances(owner, action),
        )
    problem = ApiError("InvalidAction", f"The requested action `{action}` does not exist for `{scope}`.")
    return Route(None, f"{scope}:{action}", problem, authorization, action)


def authenticate(
    headers: Mapping[str, str],
    query: str,
    body: bytes,
    routed: Route,
    credentials: Mapping[str, Credentials],
    now: float,
    max_clock_skew: float,
) -> tuple[Product, Credentials]:
    """Common parameters, routing, then the signature, checked as the docs for Signature v3 describe.

    `headers` must look names up case-insensitively; `now` is wall-clock time, as the real service checks.
    """
    parsed = common_parameters(headers, routed.authorization)
    product = routed.product
    if routed.problem is not None or product is None:
        raise routed.problem or ApiError("InvalidAction", "The requested action does not exist.")
    found = verify(headers, query, body, parsed, product.api_service, credentials, now, max_clock_skew)
    return product, found


def common_parameters(headers: Mapping[str, str], parsed: ParsedAuthorization | None) -> ParsedAuthorization:
    """The common parameters every request carries, and its `Authorization` header as read (`parsed`: None
    when it could not be)."""
    _required(headers, "X-TC-Action", "Action")
    _required(headers, "X-TC-Version", "Version")
    _required(headers, "X-TC-Region", "Region")
    raw_timestamp = _required(headers, "X-TC-Timestamp", "Timestamp")
    if not raw_timestamp.isdigit():
        raise ApiError(
            "InvalidParameterValue", f"The value `{raw_timestamp}` of parameter `Timestamp` is not valid."
        )
    if parsed is None:
        raise ApiError("AuthFailure.InvalidAuthorization", "The request `Authorization` header is invalid.")
    return parsed


def verify(
    headers: Mapping[str, str],
    query: str,
    body: bytes,
    parsed: ParsedAuthorization,
    service: str,
    credentials: Mapping[str, Credentials],
    now: float,
    max_clock_skew: float,
) -> Credentials:
    """The signature of a request signed for `service`: the keys that signed it, or the error."""
    timestamp = int(headers.get("X-TC-Timestamp", "").strip())
    signed = parsed.signed_headers.split(";")
    if "content-type" not in signed or "host" not in signed:
        raise ApiError(
            "AuthFailure.InvalidAuthorization", "`SignedHeaders` must include `content-type;host`."
        )
    if parsed.date != utc_date(timestamp):
        raise ApiError(
            "AuthFailure.InvalidAuthorization", "`Date` in Credential does not match X-TC-Timestamp."
        )
    found = credentials.get(parsed.secret_id)
    if found is None:
        raise ApiError(
            "AuthFailure.SecretIdNotFound", "The SecretId is not found, please ensure that it exists."
        )
    if abs(now - timestamp) > max_clock_skew:
        raise ApiError(
            "AuthFailure.SignatureExpire",
            f"Signature expired: X-TC-Timestamp {timestamp} is more than "
            f"{max_clock_skew:g}s away from the server time.",
        )
    canonical = _canonical(parsed.signed_headers, headers, query, body)
    expected = signature(found.secret_key, timestamp, service, string_to_sign(timestamp, service, canonical))
    if not hmac.compare_digest(expected, parsed.signature):
        raise ApiError(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        )
    if not hmac.compare_digest(headers.get("X-TC-Token", ""), found.token):
        raise ApiError("AuthFailure.TokenFailure", "The security token is invalid or missing.")
    return found


def _required(headers: Mapping[str, str], header: str, parameter: str) -> str:
    value = headers.get(header, "").strip()
    if not value:
        raise ApiError("MissingParameter", f"The request is missing a required parameter `{parameter}`.")
    return value


def _canonical(signed_headers: str, headers: Mapping[str, str], query: str, body: bytes) -> str:
    content_type, host = headers.get("Content-Type", ""), headers.get("Host", "")
    if signed_headers == SIGNED_HEADERS:
        return canonical_request("POST", host, content_type, body, query)
    # Clients may sign extra headers (the docs allow it, values lowercased); rebuild the canonical form.
    lines = "".join(f"{name}:{headers.get(name, '').strip().lower()}\n" for name in signed_headers.split(";"))
    return f"POST\n/\n{query}\n{lines}\n{signed_headers}\n{hashlib.sha256(body).hexdigest()}"


def read_params(body: bytes) -> dict[str, Any]:
    """The request's parameters: a JSON object (an empty body is no parameters)."""
    try:
        params = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("InvalidParameter", "The request body is not valid JSON.") from exc
    if not isinstance(params, dict):
        raise ApiError("InvalidParameter", "The request body must be a JSON object.")
    return params


def is_list_request(routed: Route, params: Mapping[str, Any]) -> bool:
    """True when the request asks the product's list API rather than its status API.

    PostgreSQL's DescribeTasks is both: a request naming a TaskId is the one-task question the status poll
    asks (answered as before, other parameters beside it being UnknownParameter), any other is a list.
    """
    product = routed.product
    if routed.listing is None or product is None:
        return False
    # An instance's task list answers the status request of one of its tasks too (instancetasks).
    if product.id_kind.pair:
        return True
    return not product.listing_shares_quota or product.id_param not in params


def is_sweep_request(routed: Route, params: Mapping[str, Any]) -> bool:
    """True for a list request that a sweep sends, not a status poll: an instance's task list asked with a
    Status filter (the exporter's status request of one task names none) or the busy instances' list; any
    other list request. Only the simulator's faults tell the two apart (`set_action_faults`)."""
    product = routed.product
    if product is not None and product.id_kind.pair and not routed.instances:
        return "Status" in params
    return is_list_request(routed, params)


def read_task_id(product: Product, params: Mapping[str, Any]) -> str:
    """The task ID of a request holding exactly the product's ID parameter, of the right JSON type."""
    for name in params:
        if name != product.id_param:
            raise ApiError("UnknownParameter", f"The parameter `{name}` is not recognized.")
    if product.id_param not in params:
        raise ApiError(
            "MissingParameter", f"The request is missing a required parameter `{product.id_param}`."
        )
    value = params[product.id_param]
    integer = product.id_kind.integer
    if isinstance(value, bool) or not isinstance(value, int if integer else str):
        expected = "Integer" if integer else "String"
        raise ApiError(
            "InvalidParameter", f"The value type of parameter `{product.id_param}` must be {expected}."
        )
    return str(value)


# --------------------------------------------------------------------------------------------- quotas


def judge(window: deque[float], now: float, quota: float, lateness: Lateness | None) -> float:
    """The slack a quota decision on `window` uses (0 without a lateness monitor), noting whether it let
    through what the strict second would refuse."""
    slack = lateness.slack() if lateness is not None else 0.0
    if lateness is not None and slack > 0:
        lateness.used(slack, len(window) >= quota > held(window, now, slack))
    return slack


class Quotas:
    """A sliding one-second window of accepted requests per (secret id, product, action).

    A list action has a quota of its own (`list_rates`), except PostgreSQL's, which is its status action:
    listing and polling spend that action's one quota between them.
    """

    def __init__(
        self, overrides: Mapping[str, float] | None = None, list_overrides: Mapping[str, float] | None = None
    ) -> None:
        unknown = set(overrides or {}) - set(BY_NAME)
        if unknown:
            raise ValueError(f"quotas for unknown services: {sorted(unknown)}")
        self.rates = {s.name: float((overrides or {}).get(s.name, s.default_rate_limit)) for s in PRODUCTS}
        own = {s.name: s.listing for s in PRODUCTS if s.listing is not None and not s.listing_shares_quota}
        unlisted = set(list_overrides or {}) - set(own)
        if unlisted:
            raise ValueError(
                f"list quotas for services without a list API of their own: {sorted(unlisted)} "
                f"(those with one: {sorted(own)}; a shared one is set with the status quota)"
            )
        self.list_rates = {
            name: float((list_overrides or {}).get(name, listing.default_rate_limit))
            for name, listing in own.items()
        }
        self._windows: dict[tuple[str, str, str], deque[float]] = {}

    def bucket(
        self, product: Product, *, listing: bool = False, instances: bool = False
    ) -> tuple[str, float]:
        """The action whose quota a request spends, and that quota: the status action's, or with `listing`
        the list action's (PostgreSQL's list action is its status action: the one quota), or with
        `instances` the busy instances' list's (its published quota)."""
        first = product.listing.instances if product.listing is not None else None
        if instances and first is not None:
            return first.action, first.default_rate_limit
        if listing and product.listing is not None and not product.listing_shares_quota:
            return product.listing.action, self.list_rates[product.name]
        return product.action, self.rates[product.name]

    def admit(
        self,
        product: Product,
        secret_id: str,
        now: float,
        stats: ActionStats,
        *,
        listing: bool = False,
        account: ActionStats | None = None,
        instances: bool = False,
        lateness: Lateness | None = None,
    ) -> None:
        """Counts one request to the status action, or with `listing` to the list action, in `stats` (every
        caller's) and `account` (the secret id's own); the second is judged less the simulator's own recent
        lateness (lateness.py)."""
        action, quota = self.bucket(product, listing=listing, instances=instances)
        window = self._windows.setdefault((secret_id, product.name, action), deque())
        slide(window, now)
        slack = judge(window, now, quota, lateness)
        if held(window, now, slack) >= quota:
            for counted in (stats, account):
                if counted is not None:
                    counted.throttled += 1
            raise ApiError(
                "RequestLimitExceeded",
                f"Your current request rate exceeds the limit of {quota:g} requests per second "
                f"for {action}. Please reduce the frequency of calls.",
            )
        window.append(now)
        stats.accept(now, slack)
        if account is not None:
            account.accept(now, slack)
