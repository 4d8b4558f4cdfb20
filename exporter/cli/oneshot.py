"""The engine `get` and `wait` share: which tasks the command line names, and one poll of one of them through
the daemon's own path (config, credential chain, token bucket per lane, signed `ApiClient.describe`).

A command line names tasks as `PRODUCT ID [ID...] [PRODUCT ID...]`: a product name switches the product for
the IDs after it (product names are never IDs of another product: they are checked first). Each ID is
canonicalised by its product's ID kind, as a watch entry in the config file is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.catalogue.products import (
    BY_NAME,
    FINAL_PHASES,
    NOT_FOUND,
    PRODUCTS,
    Observation,
    Phase,
    Product,
)
from exporter.config.lanes import Lane
from exporter.config.parser import Config, ConfigError, PollingConfig, WatchedTask, load_config
from exporter.config.values import ValueChecker
from exporter.credentials.chain import CredentialProvider, CredentialsError, open_provider
from exporter.polling.client import CREDENTIALS_UNAVAILABLE, ApiClient, Outcome, api_session
from exporter.polling.ratelimit import TokenBucket
from exporter.polling.scheduler import Plan, backoff_delay, describe_task

DEFAULT_CONFIG_FILE = "config.yaml"
EXIT_OK = 0
EXIT_FAILED = 1  # wait: a task ended in a final status other than its product's success status
EXIT_USAGE = 2  # bad flags, IDs, config, region, account or credentials: nothing was asked
EXIT_NOT_FOUND = 3
EXIT_ERROR = 4  # get: an API or transport error other than "not found"; wait: access denied, persistently
EXIT_TIMEOUT = 124  # wait: --timeout passed first (as timeout(1) exits)


class UsageError(Exception):
    """A problem with the command's inputs: printed as `error: ...` and exit 2, never a traceback."""


def parse_targets(words: Sequence[str]) -> list[tuple[Product, str]]:
    """`PRODUCT ID [ID...] [PRODUCT ID...]` as (product, canonical ID) pairs, duplicates dropped; raises
    UsageError naming the first bad word."""
    products = ", ".join(s.name for s in PRODUCTS)
    if not words:
        raise UsageError(f"expected PRODUCT ID [ID...], with PRODUCT one of {products}")
    product: Product | None = None
    targets: list[tuple[Product, str]] = []
    given_ids = 0
    for word in words:
        if word in BY_NAME:
            if product is not None and given_ids == 0:
                raise UsageError(f"no ID given for {product.name}")
            product, given_ids = BY_NAME[word], 0
            continue
        if product is None:
            raise UsageError(f"expected a product first (one of {products}), got {word!r}")
        task_id = product.id_kind.canonical(word)
        if task_id is None:
            raise UsageError(f"{product.name}: expected {product.id_kind.expected}, got {word!r}")
        given_ids += 1
        if (product, task_id) not in targets:
            targets.append((product, task_id))
    if product is not None and given_ids == 0:
        raise UsageError(f"no ID given for {product.name}")
    return targets


def read_config(path: str | None) -> Config:
    """The config file when there is one (`path` None: config.yaml, if present); else the defaults: the
    default account's credential chain, the published endpoints and quotas, no region."""
    if path is None:
        if not Path(DEFAULT_CONFIG_FILE).exists():
            return Config(source="(no config file)")
        path = DEFAULT_CONFIG_FILE
    try:
        return load_config(path)
    except ConfigError as exc:
        lines = "\n".join(f"  {problem}" for problem in exc.problems)
        raise UsageError(f"invalid configuration ({len(exc.problems)} problem(s)):\n{lines}") from None


def choose_region(config: Config, region: str | None) -> str:
    if region is None:
        if config.region is None:
            raise UsageError(f"no region: give --region, or set `region` in {config.source}")
        return config.region
    check = ValueChecker("--region")
    if check.region(region, "--region") is None:
        raise UsageError(f"--region: expected a region name like ap-guangzhou, got {region!r}")
    return region


def choose_account(config: Config, account: str | None) -> str:
    names = config.account_names
    if account is None:
        return names[0]
    if account not in names:
        raise UsageError(
            f"--account: no account {account!r} in {config.source} (accounts: {', '.join(names)})"
        )
    return account


def iso_time(unix: float | None) -> str | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class TaskResult:
    """What is known of one task: its last observation, or the last poll's error."""

    task: WatchedTask
    observation: Observation | None = None
    error: Outcome | None = None  # the last poll's failure; None after a successful poll
    not_found: bool = False  # the API said it does not know the ID (wait: after the grace period)
    polls: int = 0
    consecutive_errors: int = 0
    denied_in_a_row: int = 0  # consecutive answers refusing the keys or their permissions (is_denied)
    denied: bool = False  # wait: refused DENIED_IN_A_ROW times in a row, no longer polled

    @property
    def product(self) -> Product:
        return BY_NAME[self.task.product]

    @property
    def status(self) -> str | None:
        return None if self.observation is None else self.observation.status

    @property
    def phase(self) -> Phase | None:
        """The catalogue's phase of the last answer: not_found once the API said so, else the status's;
        None before any answer."""
        if self.not_found:
            return Phase.NOT_FOUND
        return None if self.status is None else self.product.phase(self.status)

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def succeeded(self) -> bool:
        return self.phase is Phase.SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.phase is Phase.FAILED

    @property
    def shown_status(self) -> str:
        """The status, or what stands for one: `not-found`, `error: CODE`, `-` before any answer."""
        if self.not_found:
            return "not-found"
        if self.status is not None:
            return self.status
        if self.error is not None:
            return f"error: {self.error.code}"
        return "-"

    def as_json(self) -> dict[str, Any]:
        observation = self.observation
        error = self.error
        return {
            "product": self.task.product,
            "region": self.task.region,
            "account": self.task.account,
            "id": self.task.task_id,
            "status": self.status,
            "phase": None if self.phase is None else str(self.phase),
            "final": self.final,
            "succeeded": self.succeeded,
            "not_found": self.not_found,
            "info": None if observation is None else observation.info,
            "started": None if observation is None else iso_time(observation.start_time),
            "ended": None if observation is None else iso_time(observation.end_time),
            "error": None
            if error is None
            else {"code": error.code, "message": error.message, "request_id": error.request_id},
        }


@dataclass
class Session:
    """Everything one command polls with; `open()` as an async context manager."""

    config: Config
    region: str
    account: str
    plan: Plan
    client: ApiClient
    buckets: dict[Lane, TokenBucket] = field(default_factory=dict)
    rand: Any = random.random

    def task(self, product: Product, task_id: str) -> WatchedTask:
        return WatchedTask(product.name, task_id, self.region, account=self.account)

    def bucket(self, lane: Lane) -> TokenBucket:
        if lane not in self.buckets:
            self.buckets[lane] = TokenBucket(self.plan.rates[lane.account, lane.product])
        return self.buckets[lane]

    def backoff(self, result: TaskResult, polling: PollingConfig) -> float:
        return backoff_delay(result.consecutive_errors, polling, self.rand)

    async def poll(self, result: TaskResult) -> Outcome:
        """One poll of the task, paced by its lane's bucket, recorded in `result`; a throttled answer slows
        the bucket down, as in the daemon."""
        task = result.task
        product = result.product
        lane = self.plan.lane(task)
        bucket = self.bucket(lane)
        await bucket.acquire()
        outcome = await describe_task(
            self.client, product, lane.endpoint, task, self.plan.credentials[task.account]
        )
        if product.is_throttling(outcome.code):
            bucket.throttled()
        result.polls += 1
        if outcome.observation is not None:
            result.observation, result.error, result.consecutive_errors = outcome.observation, None, 0
            result.not_found = False
        else:
            result.error = outcome
            result.consecutive_errors += 1
        result.denied_in_a_row = result.denied_in_a_row + 1 if is_denied(outcome.code) else 0
        return outcome


# Tencent Cloud's common error codes (every API's) for keys it does not accept (AuthFailure.*: unknown or
# disabled SecretId, bad signature or token) and for a CAM policy that does not allow the action
# (UnauthorizedOperation.*); and no keys to be had at all. Retrying does not mend them.
_DENIED_PREFIXES = ("AuthFailure", "UnauthorizedOperation")


def is_denied(code: str | None) -> bool:
    """The answer refuses the keys or their permissions, or there are no keys."""
    if code is None:
        return False
    return code == CREDENTIALS_UNAVAILABLE or code.split(".", 1)[0] in _DENIED_PREFIXES


def is_not_found(product: Product, outcome: Outcome) -> bool:
    """The API's way of saying it knows no task with this ID: its error code, or an empty answer."""
    return outcome.code == NOT_FOUND or outcome.code in product.not_found_codes


@contextlib.asynccontextmanager
async def open_session(
    config: Config, region: str, account: str, env: Mapping[str, str] | None = None
) -> Any:
    """Opens the account's credential chain and an HTTP session; raises UsageError when no credentials can
    be had. Yields a Session; closes everything on exit."""
    account_config = next(a for a in config.accounts if a.name == account)
    try:
        provider: CredentialProvider = await open_provider(
            account_config.credentials,
            os.environ if env is None else env,
            where=config.where(account_config),
            use_env=account_config.use_env,
        )
    except CredentialsError as exc:
        raise UsageError(str(exc)) from None
    try:
        async with api_session() as http:
            rates = {(account, s.name): config.apis[s.name].rate_limit for s in PRODUCTS}
            plan = Plan(config.apis, rates, config.polling, {account: provider})
            yield Session(config, region, account, plan, ApiClient(http, config.polling.timeout))
    finally:
        await provider.close()


def polling_for(config: Config, interval: float) -> PollingConfig:
    """The config's polling settings with the command's interval (backoff starts from it)."""
    return dataclasses.replace(config.polling, interval=interval)
