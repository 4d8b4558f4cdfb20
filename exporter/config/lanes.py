"""What one token bucket stands for: Tencent counts each quota per (sub-account, API, endpoint host).

So the exporter keeps one bucket per (account, product, action, endpoint): two regions reached through
different hosts never share one, two accounts never share one, and discovery's list actions have their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Lane:
    account: str
    product: str
    action: str
    endpoint: str  # the URL requests go to

    @property
    def host(self) -> str:
        """The endpoint as the `api_endpoint` label shows it: host[:port], the unit Tencent counts by."""
        return urlsplit(self.endpoint).netloc

    @property
    def labels(self) -> tuple[str, str, str, str]:
        """Values of the per-API series' labels (account, product, action, api_endpoint)."""
        return (self.account, self.product, self.action, self.host)
