"""Tencent's error envelope: every refusal of the API is an HTTP 200 whose `Response` holds `Error`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Final

# Messages for codes a test may inject by name; anything else gets a generic one.
_MESSAGES: Final[Mapping[str, str]] = {
    "InternalError": "An internal error has occurred. Retry your request later.",
    "InternalError.DbOperationFailed": "Failed to query the database.",
    "InternalError.UndefinedError": "Unknown error.",
    "CdbError.TaskError": "Backend task error.",
    "RequestLimitExceeded": "The number of requests exceeds the frequency limit.",
    "ResourceUnavailable": "The resource is unavailable.",
    "UnauthorizedOperation.PermissionDenied": "You have no permission to call this API.",
    "AuthFailure.UnauthorizedOperation": "The request is not authorized by CAM.",
    "OperationDenied.UserHasNoStrategy": "This account is not authorized to access the requested resource.",
}


class ApiError(Exception):
    """An answer in Tencent's error envelope (HTTP 200, `Response.Error`)."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message or _MESSAGES.get(code, f"Simulated error {code}.")


def request_id() -> str:
    return str(uuid.uuid4())


def error_body(error: ApiError) -> bytes:
    envelope = {
        "Response": {"Error": {"Code": error.code, "Message": error.message}, "RequestId": request_id()}
    }
    return json.dumps(envelope).encode()
