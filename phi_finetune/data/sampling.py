"""Row selection: ``head`` (the reference's first pc%), seeded ``random``, validation carve.

``head`` with ``split_pc`` takes what ``load_dataset(id, split=f"{split}[:{pc}%]")`` takes in
the reference ``download-dataset.py``: the first ``round(pc * n / 100)`` rows, rounded to the
closest integer the way ``datasets`` does it (Python's ``round``: halves go to even).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, Protocol, TypeAlias

from phi_finetune.errors import ConfigurationError

__all__ = [
    "SampleMode",
    "Selection",
    "head_rows",
    "in_validation",
    "random_indices",
    "rows_wanted",
    "select_rows",
]

SampleMode: TypeAlias = Literal["head", "random"]


class Countable(Protocol):
    """A row source, as far as sampling needs it."""

    def count(self) -> int: ...


def head_rows(n: int, pc: float) -> int:
    """Rows in ``split[:pc%]`` of an ``n``-row split, as ``datasets`` computes it."""
    return round(pc * n / 100.0)


def check_sampling(
    split_pc: float | None,
    rows: int | Mapping[str, int] | None,
    sample: str,
    validation_pc: float | None,
) -> None:
    """Raise :class:`ConfigurationError` for impossible sampling arguments."""
    if sample not in ("head", "random"):
        raise ConfigurationError(f"sample must be 'head' or 'random', got {sample!r}", key="sample")
    if split_pc is not None and rows is not None:
        raise ConfigurationError("give split_pc or rows, not both", key="split_pc")
    if split_pc is not None and not 0 < split_pc <= 100:
        raise ConfigurationError(f"split_pc must be in (0, 100], got {split_pc}", key="split_pc")
    row_values = rows.values() if isinstance(rows, Mapping) else [] if rows is None else [rows]
    for value in row_values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(
                f"rows must be a non-negative integer, got {value!r}", key="rows"
            )
    if validation_pc is not None and not 0 < validation_pc < 100:
        raise ConfigurationError(
            f"validation_pc must be in (0, 100), got {validation_pc}", key="validation_pc"
        )


def rows_wanted(
    split: str, n: int | None, split_pc: float | None, rows: int | Mapping[str, int] | None
) -> int | None:
    """How many rows to take from ``split`` (``None``: all). ``n`` is needed with ``split_pc``."""
    if split_pc is not None:
        assert n is not None
        return head_rows(n, split_pc)
    if isinstance(rows, Mapping):
        return rows.get(split)
    return rows


def random_indices(n: int, k: int, *, seed: int, split: str) -> set[int]:
    """``k`` distinct 0-based row indices of ``n``, reproducible for (seed, split)."""
    rng = random.Random(f"phi_finetune:{seed}:{split}")
    return set(rng.sample(range(n), min(k, n)))


def in_validation(prompt_id: str, validation_pc: float) -> bool:
    """Whether a row belongs to the validation carve: a hash of its prompt_id, not its position.

    The same prompt_id always lands on the same side, whatever the sample, seed or run.
    """
    digest = hashlib.sha256(
        b"phi_finetune/validation:" + prompt_id.encode("utf-8", "surrogatepass")
    )
    return int.from_bytes(digest.digest()[:8], "big") < validation_pc / 100.0 * 2**64


class Selection(NamedTuple):
    """The sample of one split: ``limit`` (head) or ``pick`` (random), or neither (all rows)."""

    available: int | None  # rows in the split; None when they were not counted
    selected: int | None  # rows wanted; None for every row
    limit: int | None
    pick: set[int] | None


def select_rows(
    sources: Sequence[Countable],
    split: str,
    *,
    split_pc: float | None,
    rows: int | Mapping[str, int] | None,
    sample: str,
    seed: int,
) -> Selection:
    """Which rows of ``split`` to take; counts the rows only when the sample needs it."""
    n: int | None = None
    if split_pc == 100 and sample == "head":
        k = None  # every row: no counting pass
    else:
        if split_pc is not None or (sample == "random" and rows is not None):
            n = sum(s.count() for s in sources)
        k = rows_wanted(split, n, split_pc, rows)
    if k is None:
        return Selection(n, k, None, None)
    if sample == "random":
        assert n is not None
        return Selection(n, k, None, random_indices(n, k, seed=seed, split=split))
    return Selection(n, k, k, None)
