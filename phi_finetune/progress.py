"""The one switch for progress displays.

Progress bars are shown only when stderr is a TTY and neither ``PHI_FINETUNE_NO_PROGRESS`` nor
``NO_PROGRESS`` is set to a non-empty value other than ``0``; :func:`set_progress_enabled`
overrides both for the current process.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from phi_finetune.constants import progress_disabled_by_env

T = TypeVar("T")

_override: bool | None = None


def set_progress_enabled(enabled: bool | None) -> None:
    """Force progress on (``True``) or off (``False``); ``None`` returns to automatic."""
    global _override
    _override = enabled


def progress_enabled() -> bool:
    """Whether progress displays should be shown now."""
    if _override is not None:
        return _override
    if progress_disabled_by_env():
        return False
    return sys.stderr.isatty()


def progress(
    iterable: Iterable[T],
    *,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    **kwargs: Any,
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar when progress is enabled, else yield it unchanged."""
    if not progress_enabled():
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, **kwargs)


def progress_bar(
    *, desc: str = "", total: int | None = None, unit: str = "it", **kwargs: Any
) -> Any:
    """A tqdm bar (``disable=True`` when progress is off) for manual ``update()`` calls."""
    from tqdm.auto import tqdm

    return tqdm(desc=desc, total=total, unit=unit, disable=not progress_enabled(), **kwargs)
