"""Who the exporter calls the API as: `credentials:` sections and the `accounts:` list of them.

Without `accounts:`, the top-level `credentials:` section is one account named "default". Each account has its
own credential chain, its own token buckets (Tencent counts quotas per sub-account) and the label `account`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from exporter.config.validation import describe, shown
from exporter.config.values import USER_INFO_PROBLEM, ValueChecker, has_odd_characters, has_user_info

DEFAULT_STS_ENDPOINT = "https://sts.tencentcloudapi.com"
DEFAULT_ROLE_SESSION_NAME = "tencentcloud-task-exporter"
MAX_ROLE_DURATION = 43200  # AssumeRole's DurationSeconds: default 7200, at most 43200
_CAM_ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,128}")
_ROLE_SESSION_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{2,128}")
_CREDENTIALS_KEYS = {
    "secret_id",
    "secret_key",
    "token",
    "profile",
    "profile_section",
    "cvm_role",
    "role_arn",
    "role_session_name",
    "role_duration",
    "sts_endpoint",
    "metadata_url",
}
DEFAULT_METADATA_URL = "http://metadata.tencentyun.com/latest/meta-data/cam/security-credentials/"


@dataclass(frozen=True)
class CredentialsConfig:
    secret_id: str = ""
    secret_key: str = ""
    token: str = ""
    profile: str = ""  # "": $TENCENTCLOUD_CREDENTIALS_FILE, ~/.tencentcloud/..., /etc/tencentcloud/...
    profile_section: str = "default"
    cvm_role: str = ""  # "": the role the metadata service lists
    cvm_role_enabled: bool = True  # `cvm_role: false` skips the metadata service
    role_arn: str = ""  # set: STS AssumeRole with the keys the chain found
    role_session_name: str = DEFAULT_ROLE_SESSION_NAME
    role_duration: int = 7200
    sts_endpoint: str = DEFAULT_STS_ENDPOINT
    # Where the CVM role's keys are listed; a proxy or a test stands in for the real metadata service here.
    metadata_url: str = DEFAULT_METADATA_URL

    def __repr__(self) -> str:
        parts = (
            f"{f.name}='<secret>'"
            if f.name in ("secret_key", "token")
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"CredentialsConfig({', '.join(parts)})"


def parse_credentials(check: ValueChecker, value: object, path: str = "credentials") -> CredentialsConfig:
    """A `credentials:` section (top level or an account's, at `path`); every key is optional."""
    creds = check.mapping(value, path, _CREDENTIALS_KEYS)
    default = CredentialsConfig()

    cvm_role, cvm_role_enabled = "", True
    raw_role = creds.get("cvm_role")
    if isinstance(raw_role, bool):
        cvm_role_enabled = raw_role
    elif raw_role is not None:
        if isinstance(raw_role, str) and (raw_role == "" or _CAM_ROLE_NAME.fullmatch(raw_role)):
            cvm_role = raw_role
        else:
            check.error(
                f"{path}.cvm_role",
                "expected a CAM role name (1-128 of A-Z a-z 0-9 _+=,.@-), empty to use the role the metadata "
                f"service lists, or false to skip the metadata service, got {describe(raw_role)}",
            )

    section = check.string(creds.get("profile_section"), f"{path}.profile_section", default.profile_section)
    if not section.strip() or "]" in section or "\n" in section:
        check.error(f"{path}.profile_section", f"expected an INI section name, got {shown(section)}")
        section = default.profile_section

    role_arn = check.string(creds.get("role_arn"), f"{path}.role_arn")
    if role_arn and not role_arn.startswith("qcs::cam::"):
        check.error(
            f"{path}.role_arn",
            f"expected a role ARN like qcs::cam::uin/12345678:roleName/NAME, got {shown(role_arn)}",
        )
        role_arn = ""

    session_name = check.string(
        creds.get("role_session_name"), f"{path}.role_session_name", default.role_session_name
    )
    if not _ROLE_SESSION_NAME.fullmatch(session_name):
        check.error(
            f"{path}.role_session_name",
            f"expected 2-128 of A-Z a-z 0-9 _+=,.@- (the AssumeRole limits), got {shown(session_name)}",
        )
        session_name = default.role_session_name

    duration = check.duration(
        creds.get("role_duration"), f"{path}.role_duration", default.role_duration, 300, False
    )
    if duration > MAX_ROLE_DURATION or duration != int(duration):
        check.error(
            f"{path}.role_duration",
            f"expected whole seconds from 5m to 12h (AssumeRole allows at most 43200s), "
            f"got {creds.get('role_duration')!r}",
        )
        duration = default.role_duration

    return CredentialsConfig(
        secret_id=check.string(creds.get("secret_id"), f"{path}.secret_id"),
        secret_key=check.string(creds.get("secret_key"), f"{path}.secret_key"),
        token=check.string(creds.get("token"), f"{path}.token"),
        profile=check.string(creds.get("profile"), f"{path}.profile"),
        profile_section=section,
        cvm_role=cvm_role,
        cvm_role_enabled=cvm_role_enabled,
        role_arn=role_arn,
        role_session_name=session_name,
        role_duration=int(duration),
        sts_endpoint=check.endpoint(creds.get("sts_endpoint"), f"{path}.sts_endpoint", default.sts_endpoint),
        metadata_url=_metadata_url(
            check, creds.get("metadata_url"), f"{path}.metadata_url", default.metadata_url
        ),
    )


def _metadata_url(check: ValueChecker, value: object, path: str, default: str) -> str:
    text = check.string(value, path, default)
    parts = urlsplit(text)
    if has_user_info(parts):
        check.error(path, USER_INFO_PROBLEM)
        return default
    if has_odd_characters(text) or parts.scheme not in ("http", "https") or not parts.hostname:
        check.error(path, f"expected an http(s) URL, got {shown(text)}")
        return default
    # The role name is appended to this URL.
    return text if text.endswith("/") else text + "/"


DEFAULT_ACCOUNT = "default"
# A label value that reads well in a legend and a URL: no spaces, quotes or slashes.
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class AccountConfig:
    name: str
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    where: str = "credentials"  # the section's key path, for messages about its credentials

    @property
    def use_env(self) -> bool:
        """The environment's keys (TENCENTCLOUD_SECRET_ID...) belong to one account: the default one."""
        return self.name == DEFAULT_ACCOUNT


def parse_accounts(
    check: ValueChecker, value: object, credentials: CredentialsConfig, credentials_given: bool
) -> tuple[AccountConfig, ...]:
    """The `accounts:` list, or the one default account made of the top-level `credentials:` section."""
    if value is None:
        return (AccountConfig(DEFAULT_ACCOUNT, credentials),)
    if credentials_given:
        check.error(
            "credentials",
            "expected either `credentials:` (one account) or `accounts:` (each with its own credentials), "
            "not both",
        )
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else describe(value)
        check.error("accounts", f"expected a list of {{name, credentials}}, got {got}")
        return (AccountConfig(DEFAULT_ACCOUNT, credentials),)
    accounts: list[AccountConfig] = []
    seen: dict[str, str] = {}
    for index, entry in enumerate(value):
        path = f"accounts[{index}]"
        item = check.mapping(entry, path, {"name", "credentials"})
        if not isinstance(entry, dict):
            continue  # mapping() has recorded what is wrong with it
        name = item.get("name")
        if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
            check.error(
                f"{path}.name",
                "expected an account name of 1-63 of A-Z a-z 0-9 _.- (the label `account`), "
                f"got {describe(name)}",
            )
            continue
        if name in seen:
            check.error(f"{path}.name", f"account {shown(name)} is already defined at {seen[name]}")
            continue
        seen[name] = path
        where = f"{path}.credentials"
        credentials = parse_credentials(check, item.get("credentials"), where)
        twin = next(
            (
                a
                for a in accounts
                if credentials.secret_id and a.credentials.secret_id == credentials.secret_id
            ),
            None,
        )
        if twin is not None:
            # Tencent counts the quota per sub-account: two names for one key pair would each spend all of it.
            check.error(
                f"{where}.secret_id",
                f"the same SecretId as account {shown(twin.name)}: Tencent counts one quota for both; "
                "give each account its own keys",
            )
            continue
        accounts.append(AccountConfig(name, credentials, where))
    return tuple(accounts) or (AccountConfig(DEFAULT_ACCOUNT, credentials),)
