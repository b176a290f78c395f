"""Per-split statistics: rows, turns, characters and tokens (min, percentiles, max), roles, dups."""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from phi_finetune.data.validation import RowFacts, key_digest

__all__ = ["DataStats", "Distribution", "SplitStats"]


@attrs.frozen
class Distribution:
    """Summary of one per-conversation quantity (nearest-rank percentiles)."""

    min: int
    p50: int
    p90: int
    p99: int
    max: int
    mean: float

    @classmethod
    def of(cls, values: array[int]) -> Distribution:
        if not values:
            return cls(0, 0, 0, 0, 0, 0.0)
        ordered = sorted(values)
        n = len(ordered)

        def rank(q: int) -> int:
            return ordered[min(n - 1, max(0, math.ceil(q * n / 100) - 1))]

        return cls(
            ordered[0], rank(50), rank(90), rank(99), ordered[-1], round(sum(ordered) / n, 2)
        )

    def __str__(self) -> str:
        return (
            f"min {self.min}, p50 {self.p50}, p90 {self.p90}, p99 {self.p99}, max {self.max}, "
            f"mean {self.mean:g}"
        )


@attrs.frozen
class SplitStats:
    """Statistics of one split."""

    rows: int
    invalid_rows: int
    turns: Distribution
    chars: Distribution
    tokens: Distribution
    roles: Mapping[str, int]
    duplicate_prompt_ids: int
    duplicate_first_user: int
    max_tokens: int | None
    over_limit: int

    @property
    def over_limit_share(self) -> float:
        return self.over_limit / self.rows if self.rows else 0.0


@attrs.frozen
class DataStats:
    """Statistics of every split; ``str()`` is a readable table, :meth:`to_json` for machines."""

    splits: Mapping[str, SplitStats]
    token_count: str = "estimate"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"token_count": self.token_count, "splits": {}}
        for name, s in self.splits.items():
            entry = attrs.asdict(s)
            entry["over_limit_share"] = round(s.over_limit_share, 6)
            out["splits"][name] = entry
        return out

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode("utf-8")

    def __str__(self) -> str:
        lines: list[str] = []
        for name, s in self.splits.items():
            lines.append(f"{name}: {s.rows} rows ({s.invalid_rows} invalid)")
            lines.append(f"  turns:  {s.turns}")
            lines.append(f"  chars:  {s.chars}")
            lines.append(f"  tokens: {s.tokens} ({self.token_count})")
            if s.max_tokens is not None:
                lines.append(
                    f"  over {s.max_tokens} tokens: {s.over_limit} ({s.over_limit_share:.2%})"
                )
            roles = ", ".join(f"{r} {n}" for r, n in s.roles.items())
            lines.append(f"  roles: {roles}")
            lines.append(
                f"  duplicates: {s.duplicate_prompt_ids} prompt_id, "
                f"{s.duplicate_first_user} first user message"
            )
        return "\n".join(lines)


class StatsBuilder:
    """Accumulates one split's statistics from :class:`RowFacts` (arrays: ~12 bytes a row)."""

    def __init__(self, max_tokens: int | None) -> None:
        self.max_tokens = max_tokens
        self.rows = 0
        self.invalid = 0
        self.turns: array[int] = array("q")
        self.chars: array[int] = array("q")
        self.tokens: array[int] = array("q")
        self.roles = [0, 0, 0]
        self.ids: set[bytes] = set()
        self.firsts: set[bytes] = set()
        self.dup_ids = 0
        self.dup_first = 0
        self.over = 0

    def add(self, facts: RowFacts | None, invalid: bool) -> None:
        self.rows += 1
        if invalid:
            self.invalid += 1
        if facts is None:
            return
        self.turns.append(facts.messages)
        self.chars.append(facts.chars)
        self.tokens.append(facts.tokens)
        for i, n in enumerate(facts.roles):
            self.roles[i] += n
        if facts.prompt_id is not None:
            key = key_digest(facts.prompt_id)
            if key in self.ids:
                self.dup_ids += 1
            self.ids.add(key)
        if facts.first_user is not None:
            key = key_digest(facts.first_user)
            if key in self.firsts:
                self.dup_first += 1
            self.firsts.add(key)
        if self.max_tokens is not None and facts.tokens > self.max_tokens:
            self.over += 1

    def build(self) -> SplitStats:
        return SplitStats(
            rows=self.rows,
            invalid_rows=self.invalid,
            turns=Distribution.of(self.turns),
            chars=Distribution.of(self.chars),
            tokens=Distribution.of(self.tokens),
            roles=dict(zip(("system", "user", "assistant"), self.roles, strict=True)),
            duplicate_prompt_ids=self.dup_ids,
            duplicate_first_user=self.dup_first,
            max_tokens=self.max_tokens,
            over_limit=self.over,
        )
