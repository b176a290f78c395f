"""A credential whose tokens are well-formed (unsigned) JWTs, as the azure-ai-ml SDK expects."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

__all__ = ["FakeCredential", "make_jwt", "read_claims"]

TENANT_ID = "00000000-0000-0000-0000-0000000000aa"
OBJECT_ID = "00000000-0000-0000-0000-0000000000bb"


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _audience(scope: str) -> str:
    """``https://ml.azure.com/.default`` -> ``https://ml.azure.com`` (no trailing slash)."""
    aud = scope.removesuffix("/.default").removesuffix(".default")
    return aud.rstrip("/") if aud.startswith("https://ml.azure.com") else aud


def make_jwt(audience: str, *, lifetime_s: int = 3600, now: float | None = None) -> str:
    """An unsigned JWT with the claims the SDK reads (``aud``, ``oid``, ``tid``, ``exp``...)."""
    issued = int(time.time() if now is None else now)
    header = {"alg": "none", "typ": "JWT"}
    claims = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{TENANT_ID}/",
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_s,
        "oid": OBJECT_ID,
        "tid": TENANT_ID,
        "upn": "fake.user@example.com",
        "name": "Fake User",
        "appid": "00000000-0000-0000-0000-0000000000cc",
        "uti": uuid.uuid4().hex,  # unique per token, so an expired token is never reissued
    }
    signature = base64.urlsafe_b64encode(b"fake-signature").rstrip(b"=").decode()
    return f"{_b64(header)}.{_b64(claims)}.{signature}"


def read_claims(token: str) -> dict[str, Any] | None:
    """The claims of an (unverified) JWT, or ``None`` when ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


class FakeCredential:
    """An ``azure.core`` ``TokenCredential`` (and ``SupportsTokenInfo``) that never calls out.

    Every token is a JWT whose ``aud`` is the scope without ``/.default`` (for
    ``https://ml.azure.com/.default`` it is exactly ``https://ml.azure.com``). ``scopes_requested``
    records every scope asked for.

    It can expire mid-run, as a sign-in does: after :meth:`expire` (or once :meth:`expire_after`
    tokens were handed out) every token it issued, cached ones included, is refused by
    ``FakeAzureML`` with 401 and a ``WWW-Authenticate: Bearer`` challenge; tokens issued from
    then on are already past their ``exp`` claim while the client still believes them valid.
    """

    def __init__(self, *, lifetime_s: int = 3600) -> None:
        self._lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._valid_left: int | None = None
        self._expired = False
        self._revoked: set[str] = set()
        self.scopes_requested: list[str] = []
        self.tokens_issued: list[str] = []
        """Every token handed out (for tests that scan output for leaked secrets)."""

    @property
    def expired(self) -> bool:
        """Whether the sign-in has expired (its tokens are refused)."""
        return self._expired

    def expire(self) -> None:
        """Expire the sign-in now: every token issued so far and from now on is refused."""
        with self._lock:
            self._expired = True
            self._revoked.update(self.tokens_issued)

    def expire_after(self, tokens: int) -> None:
        """Hand out ``tokens`` more valid tokens, then expire (as :meth:`expire`)."""
        if tokens < 0:
            raise ValueError(f"expire_after(tokens={tokens}): tokens must be >= 0")
        if tokens == 0:
            self.expire()
            return
        with self._lock:
            self._valid_left = tokens

    def renew(self) -> None:
        """Sign in again: new tokens are valid (the refused ones stay refused)."""
        with self._lock:
            self._valid_left = None
            self._expired = False

    def is_revoked(self, token: str) -> bool:
        """Whether ``token`` was issued by this credential before it expired, or after."""
        with self._lock:
            return token in self._revoked

    def _token(self, scopes: tuple[str, ...]) -> tuple[str, int]:
        scope = scopes[0] if scopes else "https://management.azure.com/.default"
        expires = int(time.time()) + self._lifetime_s
        with self._lock:
            if self._expired or self._valid_left == 0:
                self._expired = True
                self._valid_left = None
                # exp in the past while expires_on (what azure-core caches by) is in the future
                self._revoked.update(self.tokens_issued)
                token = make_jwt(_audience(scope), lifetime_s=-60)
                self._revoked.add(token)
            else:
                token = make_jwt(_audience(scope), lifetime_s=self._lifetime_s)
                if self._valid_left is not None:
                    self._valid_left -= 1
            self.scopes_requested.extend(scopes)
            self.tokens_issued.append(token)
        return token, expires

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        token, expires = self._token(scopes)
        return AccessToken(token, expires)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        token, expires = self._token(scopes)
        return AccessTokenInfo(token, expires)

    def close(self) -> None:
        """Nothing to release (present for parity with ``azure.identity`` credentials)."""

    def __enter__(self) -> FakeCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "FakeCredential()"
