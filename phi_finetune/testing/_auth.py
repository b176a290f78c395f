"""Checking the bearer tokens the SDK sends: 401 with a ``WWW-Authenticate`` challenge.

Azure Resource Manager (``management.azure.com``) and the Azure ML data plane
(``<region>.api.azureml.ms``) take a token for ``https://management.azure.com/.default`` (what
azure-ai-ml asks for); the data plane also takes ``https://ml.azure.com``, the audience of the
``x-azureml-token`` header the SDK adds to job submissions. Requests to other hosts (blob
storage signs with a shared key or SAS, scoring uses the endpoint key) are not checked here;
unauthenticated data-plane calls (discovery) pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from phi_finetune.testing._http import FakeRequest, Reply
from phi_finetune.testing._tokens import TENANT_ID, read_claims

__all__ = ["ARM_AUDIENCES", "ML_AUDIENCES", "check_tokens"]

ARM_AUDIENCES = frozenset(
    {
        "https://management.azure.com",
        "https://management.azure.com/",
        "https://management.core.windows.net",
        "https://management.core.windows.net/",
    }
)
"""The audiences ARM accepts (and the data plane, for the SDK's management-scope tokens)."""
ML_AUDIENCES = frozenset({"https://ml.azure.com", "https://ml.azure.com/"})

_CHALLENGE = (
    'Bearer authorization_uri="https://login.microsoftonline.com/{tenant}", '
    'error="invalid_token", error_description="{description}"'
)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _unauthorized(code: str, message: str) -> Reply:
    challenge = _CHALLENGE.format(tenant=TENANT_ID, description=message.replace('"', "'"))
    return Reply(
        status=401,
        json={"error": {"code": code, "message": message}},
        headers={"WWW-Authenticate": challenge, "x-ms-failure-cause": "gateway"},
    )


def _check(
    token: str, audiences: frozenset[str], where: str, revoked: Callable[[str], bool]
) -> Reply | None:
    claims = read_claims(token)
    if claims is None:
        return _unauthorized(
            "InvalidAuthenticationToken", f"The access token in {where} is not a valid JWT."
        )
    now = int(time.time())
    exp = claims.get("exp")
    if revoked(token) or not isinstance(exp, int) or exp <= now:
        return _unauthorized(
            "ExpiredAuthenticationToken",
            f"The access token in {where} expired (exp {exp}, now {now}). Sign in again "
            "(az login) and retry.",
        )
    aud = claims.get("aud")
    if aud not in audiences:
        allowed = ", ".join(f"'{a}'" for a in sorted(audiences))
        return _unauthorized(
            "InvalidAuthenticationTokenAudience",
            f"The access token in {where} has been obtained for wrong audience or resource "
            f"'{aud}'. It should exactly match one of the allowed audiences {allowed}.",
        )
    return None


def check_tokens(
    req: FakeRequest, raw_headers: Mapping[str, str], revoked: Callable[[str], bool]
) -> Reply | None:
    """A 401 reply when ``req`` carries a missing, expired, revoked or wrong-audience token."""
    host = req.host.split(":", 1)[0]
    arm = host == "management.azure.com"
    data_plane = host.endswith(".api.azureml.ms")
    if not (arm or data_plane):
        return None
    authorization = _header(raw_headers, "authorization")
    if authorization is None:
        if arm:
            return _unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _unauthorized(
            "InvalidAuthenticationToken", "The 'Authorization' header is not a bearer token."
        )
    audiences = ARM_AUDIENCES if arm else ARM_AUDIENCES | ML_AUDIENCES
    reply = _check(token.strip(), audiences, "the 'Authorization' header", revoked)
    if reply is not None:
        return reply
    azureml_token = _header(raw_headers, "x-azureml-token")
    if azureml_token:
        return _check(azureml_token, ML_AUDIENCES, "the 'x-azureml-token' header", revoked)
    return None
