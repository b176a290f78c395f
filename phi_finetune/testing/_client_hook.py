"""The child side of server mode: forward every Azure request to a served ``FakeAzureML``.

Imported only when ``PHI_FINETUNE_FAKE_AZUREML_URL`` is set (``phi_finetune.azure.workspace``
checks the variable before resolving a credential), so production imports are unchanged.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo

from phi_finetune.errors import ConfigurationError
from phi_finetune.testing._http import Reply, read_body, to_transport_response
from phi_finetune.testing._server import TARGET_HEADER, TOKEN_PATH
from phi_finetune.testing._transport import TransportPatch

__all__ = ["RemoteCredential", "activate"]

logger = logging.getLogger(__name__)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_lock = threading.Lock()
_active: dict[str, TransportPatch] = {}
_TIMEOUT_S = 60.0


class RemoteCredential:
    """A ``TokenCredential`` whose tokens come from the served fake's own credential."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")

    def _fetch(self, scopes: tuple[str, ...]) -> tuple[str, int]:
        import requests

        query = "&".join(f"scope={quote(s, safe='')}" for s in scopes)
        reply = requests.get(f"{self._url}{TOKEN_PATH}?{query}", timeout=_TIMEOUT_S)
        reply.raise_for_status()
        data = reply.json()
        return str(data["token"]), int(data["expires_on"])

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(*self._fetch(scopes))

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(*self._fetch(scopes))

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"RemoteCredential({self._url!r})"


def _forwarder(url: str) -> Any:
    import requests
    from azure.core.exceptions import ServiceResponseError

    session = requests.Session()
    base = url.rstrip("/")

    def send(request: Any, **kwargs: Any) -> Any:
        headers = {str(k): str(v) for k, v in dict(request.headers).items()}
        headers[TARGET_HEADER] = str(request.url)
        try:
            answer = session.request(
                str(request.method),
                base + "/",
                headers=headers,
                data=read_body(request) or None,
                timeout=_TIMEOUT_S,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise ServiceResponseError(f"served FakeAzureML: {exc}", error=exc) from exc
        reply = Reply(status=answer.status_code, body=answer.content, headers=dict(answer.headers))
        return to_transport_response(request, reply, stream=bool(kwargs.get("stream")))

    return send


def activate(url: str) -> RemoteCredential:
    """Forward this process's azure-core (and ``requests``) traffic to ``url``; idempotent.

    Only a loopback URL is accepted: the served fake listens on 127.0.0.1, and nothing else may
    receive this process's Azure traffic through a variable in its environment.
    """
    host = urlsplit(url).hostname
    if host not in _LOOPBACK:
        raise ConfigurationError(
            f"PHI_FINETUNE_FAKE_AZUREML_URL={url!r} is not a loopback address; it must be the "
            "URL a served FakeAzureML gave (http://127.0.0.1:PORT). Unset the variable to use "
            "Azure."
        )
    with _lock:
        if url not in _active:
            logger.warning("Azure requests go to the test fake at %s, not to Azure", url)
            patch = TransportPatch()
            patch.apply(_forwarder(url), lambda duration: None)
            _active[url] = patch
    return RemoteCredential(url)
