"""Pointing azure-core's requests transport (and plain ``requests``) at the fake, and back."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TransportPatch"]

_ENV_TO_CLEAR = ("AZUREML_CURRENT_CLOUD", "ARM_CLOUD_METADATA_URL")


class TransportPatch:
    """Class-level patches of ``RequestsTransport.send``/``.sleep`` and ``HTTPAdapter.send``.

    ``apply`` also sets the SDK's job polling interval to 0 and clears the cloud-selection
    environment variables; ``restore`` undoes all of it.
    """

    def __init__(self) -> None:
        self._saved: dict[str, Any] = {}
        self._saved_env: dict[str, str] = {}
        self._threads_at_start: set[threading.Thread] = set()

    @property
    def applied(self) -> bool:
        return bool(self._saved)

    def apply(self, send: Callable[..., Any], sleep: Callable[[float], None]) -> None:
        """Answer every non-loopback request with ``send(request)``; record sleeps in ``sleep``."""
        import requests.adapters
        from azure.ai.ml.operations._run_history_constants import RunHistoryConstants
        from azure.core.pipeline.transport import RequestsTransport

        from phi_finetune.testing._requests_bridge import make_adapter_send

        def transport_send(transport: Any, request: Any, **kwargs: Any) -> Any:
            return send(request, **kwargs)

        def transport_sleep(transport: Any, duration: float) -> None:
            sleep(float(duration))

        real_adapter_send = requests.adapters.HTTPAdapter.__dict__["send"]
        self._threads_at_start = set(threading.enumerate())
        self._saved = {
            "adapter_send": real_adapter_send,
            "send": RequestsTransport.__dict__["send"],
            "sleep": RequestsTransport.__dict__.get("sleep"),
            "min": RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MIN,
            "max": RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MAX,
        }
        RequestsTransport.send = transport_send
        RequestsTransport.sleep = transport_sleep
        requests.adapters.HTTPAdapter.send = make_adapter_send(  # type: ignore[method-assign]
            send, real_adapter_send
        )
        RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MIN = 0
        RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MAX = 0
        for name in _ENV_TO_CLEAR:
            if name in os.environ:
                self._saved_env[name] = os.environ.pop(name)

    def join_pollers(self, timeout_s: float) -> None:
        """Wait for the ``LROPoller`` threads started since ``apply`` (at most ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        for thread in set(threading.enumerate()) - self._threads_at_start:
            if thread.name.startswith("LROPoller") and thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def restore(self) -> None:
        """Undo ``apply`` (a no-op when it is not applied)."""
        if not self._saved:
            return
        import requests.adapters
        from azure.ai.ml.operations._run_history_constants import RunHistoryConstants
        from azure.core.pipeline.transport import RequestsTransport

        saved = self._saved
        requests.adapters.HTTPAdapter.send = saved["adapter_send"]  # type: ignore[method-assign]
        RequestsTransport.send = saved["send"]
        if saved["sleep"] is None:
            del RequestsTransport.sleep
        else:
            RequestsTransport.sleep = saved["sleep"]
        RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MIN = saved["min"]
        RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MAX = saved["max"]
        self._saved = {}
        for name in _ENV_TO_CLEAR:
            os.environ.pop(name, None)
        os.environ.update(self._saved_env)
        self._saved_env = {}
