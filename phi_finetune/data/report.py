"""The validation report: counts, the first problems (file and 1-based line) and a summary.

:class:`ReportBuilder` accumulates problems while records stream by (bounded memory);
:meth:`ReportBuilder.build` freezes them into a :class:`ValidationReport`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import orjson

from phi_finetune.data.rules import RULES, Issue
from phi_finetune.errors import DataProblem, DataValidationError

__all__ = ["ReportBuilder", "ValidationReport"]


def _sorted_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))


@attrs.frozen
class ValidationReport:
    """The outcome of validating one or more splits. ``str(report)`` is a readable summary.

    ``problems`` holds at most ``max_problems`` problems (all errors before warnings are cut);
    the counts always cover every problem.
    """

    mode: str
    rows_checked: int
    rows_invalid: int
    rows_with_warnings: int
    errors: int
    warnings: int
    by_code: Mapping[str, int] = attrs.field(converter=_sorted_counts)
    splits: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    problems: tuple[DataProblem, ...] = ()
    max_tokens: int | None = None
    token_count: str = "estimate"
    purpose: str | None = None

    @property
    def ok(self) -> bool:
        """``True`` when there is no error (warnings allowed)."""
        return self.errors == 0

    @property
    def rows_valid(self) -> int:
        return self.rows_checked - self.rows_invalid

    @property
    def problems_truncated(self) -> bool:
        return len(self.problems) < self.errors + self.warnings

    def error_problems(self) -> list[DataProblem]:
        return [p for p in self.problems if p.severity == "error"]

    def summary(self) -> str:
        status = "valid" if self.ok else "INVALID"
        lines = [
            f"{status}: {self.rows_checked} rows checked, {self.rows_invalid} invalid, "
            f"{self.errors} errors, {self.warnings} warnings (mode {self.mode}, "
            f"tokens: {self.token_count}"
            + (f", limit {self.max_tokens})" if self.max_tokens is not None else ")")
        ]
        for split, counts in self.splits.items():
            lines.append(
                f"  {split}: {counts.get('rows', 0)} rows, {counts.get('invalid', 0)} invalid"
            )
        if self.by_code:
            lines.append("  by code: " + ", ".join(f"{c}={n}" for c, n in self.by_code.items()))
        return "\n".join(lines)

    def format(self, limit: int | None = 50) -> str:
        """The summary followed by up to ``limit`` problems (``None``: every stored one)."""
        shown = self.problems if limit is None else self.problems[:limit]
        lines = [self.summary()]
        lines.extend(f"{p.severity}: {p} [{p.code}]" for p in shown)
        more = self.errors + self.warnings - len(shown)
        if more > 0:
            lines.append(f"... and {more} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "purpose": self.purpose,
            "rows_checked": self.rows_checked,
            "rows_valid": self.rows_valid,
            "rows_invalid": self.rows_invalid,
            "rows_with_warnings": self.rows_with_warnings,
            "errors": self.errors,
            "warnings": self.warnings,
            "by_code": dict(self.by_code),
            "splits": {k: dict(v) for k, v in self.splits.items()},
            "max_tokens": self.max_tokens,
            "token_count": self.token_count,
            "problems": [p.to_dict() for p in self.problems],
            "problems_truncated": self.problems_truncated,
        }

    def to_json(self, *, indent: bool = True) -> str:
        option = orjson.OPT_INDENT_2 if indent else 0
        return orjson.dumps(self.to_dict(), option=option).decode("utf-8")

    def raise_for_errors(self, message: str = "the data has problems") -> None:
        """Raise :class:`DataValidationError` (first problems and totals) when not :attr:`ok`."""
        if self.ok:
            return
        counts = ", ".join(f"{c}={n}" for c, n in self.by_code.items())
        raise DataValidationError(
            f"{message}: {self.errors} errors in {self.rows_invalid} of {self.rows_checked} rows "
            f"({counts}). Fix them, or pass on_invalid='skip' to drop those rows.",
            problems=self.error_problems(),
            total=self.errors,
        )


class ReportBuilder:
    """Accumulates problems while records stream by (bounded memory)."""

    def __init__(
        self,
        *,
        mode: str,
        purpose: str | None,
        max_tokens: int | None,
        token_count: str,
        max_problems: int = 10_000,
    ) -> None:
        self.mode = mode
        self.purpose = purpose
        self.max_tokens = max_tokens
        self.token_count = token_count
        self.max_problems = max_problems
        self.rows = 0
        self.invalid = 0
        self.warned = 0
        self.errors = 0
        self.warnings = 0
        self.by_code: Counter[str] = Counter()
        self.splits: dict[str, dict[str, int]] = {}
        self.problems: list[DataProblem] = []
        self.warning_problems: list[DataProblem] = []

    def row(self, split: str, source: str, line: int | None, issues: Iterable[Issue]) -> bool:
        """Record one row's issues; return ``True`` when it has an error."""
        counts = self.splits.setdefault(split, {"rows": 0, "invalid": 0})
        counts["rows"] += 1
        self.rows += 1
        has_error = has_warning = False
        for code, field, message in issues:
            rule = RULES[code]
            self.by_code[code] += 1
            target = self.problems
            if rule.severity == "error":
                self.errors += 1
                has_error = True
            else:
                self.warnings += 1
                has_warning = True
                target = self.warning_problems
            if len(target) < self.max_problems:
                target.append(
                    DataProblem(
                        source=source,
                        line=line,
                        field=field,
                        message=message,
                        fix=rule.fix,
                        severity=rule.severity,
                        code=code,
                    )
                )
        if has_error:
            self.invalid += 1
            counts["invalid"] += 1
        if has_warning:
            self.warned += 1
        return has_error

    def extra(self, source: str, line: int | None, issue: Issue) -> None:
        """Add a problem found after the row was counted (e.g. leakage)."""
        code, field, message = issue
        rule = RULES[code]
        self.by_code[code] += 1
        if rule.severity == "error":
            self.errors += 1
            target = self.problems
        else:
            self.warnings += 1
            target = self.warning_problems
        if len(target) < self.max_problems:
            target.append(DataProblem(source, line, field, message, rule.fix, rule.severity, code))

    def build(self) -> ValidationReport:
        room = max(self.max_problems - len(self.problems), 0)
        return ValidationReport(
            mode=self.mode,
            purpose=self.purpose,
            rows_checked=self.rows,
            rows_invalid=self.invalid,
            rows_with_warnings=self.warned,
            errors=self.errors,
            warnings=self.warnings,
            by_code=dict(self.by_code),
            splits={k: dict(v) for k, v in self.splits.items()},
            problems=tuple(self.problems) + tuple(self.warning_problems[:room]),
            max_tokens=self.max_tokens,
            token_count=self.token_count,
        )
