"""What a check that was not met looks like (``Failure``, ``ValidationReport``), made from Great Expectations'
structured validation results, and the atomic write of a result file."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_SAMPLE_IDS = 20
DETAIL_VALUES = 5

# Kwargs that describe how an expectation runs, not what it expects.
_NON_EXPECTATION_KWARGS = {
    "column", "column_list", "batch_id", "result_format", "include_config", "catch_exceptions",
    "row_condition", "condition_parser", "meta", "notes", "description", "windows",
}


@dataclass
class Failure:
    expectation: str  # e.g. "expect_column_values_to_be_in_set", or a row check's rule ("psnr >= 30.0")
    column: str | None
    sample_ids: list[str] = field(default_factory=list)  # offending ids, at most MAX_SAMPLE_IDS
    detail: str = ""  # short human text: observed value / counts / what was expected
    check: str | None = None  # the check's name (checks run with modes only)

    def line(self) -> str:
        where = f" [column {self.column}]" if self.column else ""
        text = f"{self.expectation}{where}: {self.detail}"
        if self.check:
            text = f"{self.check}: {text}"
        if self.sample_ids:
            text += "; ids: " + ", ".join(self.sample_ids)
        return text


@dataclass
class ValidationReport:
    suite: str
    success: bool
    failures: list[Failure] = field(default_factory=list)

    def message(self) -> str:
        if self.success:
            return f"Great Expectations suite '{self.suite}' passed."
        lines = [
            f"Great Expectations suite '{self.suite}' failed: "
            f"{len(self.failures)} expectation(s) not met:"
        ]
        lines += [f"  - {f.line()}" for f in self.failures]
        return "\n".join(lines)


def plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so messages read 31, not np.int64(31)."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        try:
            return value.item()
        except (ValueError, TypeError):
            return value
    return value


def short(value: Any, limit: int = 10) -> str:
    if isinstance(value, (list, tuple, set)):
        items = list(value)
        text = ", ".join(repr(plain(v)) for v in items[:limit])
        if len(items) > limit:
            text += f", ... ({len(items)} in all)"
        return "[" + text + "]"
    return repr(plain(value))


def expectation_column(kwargs: dict) -> str | None:
    """The column(s) an expectation is about ("a,b" for several), or None for a table expectation."""
    column = kwargs.get("column")
    if column is None and kwargs.get("column_list"):
        column = ",".join(str(c) for c in kwargs["column_list"])
    if column is None and kwargs.get("column_A") is not None and kwargs.get("column_B") is not None:
        column = f"{kwargs['column_A']},{kwargs['column_B']}"
    return None if column is None else str(column)


def _expected_text(kwargs: dict) -> str:
    parts = [
        f"{key}={short(value)}"
        for key, value in kwargs.items()
        if key not in _NON_EXPECTATION_KWARGS and value is not None
    ]
    return "expected " + ", ".join(parts) if parts else ""


def _id_text(row: Any, id_columns: list[str]) -> str | None:
    if not isinstance(row, dict):
        return None
    if len(id_columns) == 1:
        return str(row.get(id_columns[0]))
    return ",".join(f"{c}={row.get(c)}" for c in id_columns)


def exception_message(exception_info: Any) -> str | None:
    """GE gives either {"raised_exception": ..., "exception_message": ...} or, when a metric
    failed, a dict of such dicts keyed by metric id."""
    if not isinstance(exception_info, dict):
        return None
    if "raised_exception" in exception_info:
        if exception_info.get("raised_exception"):
            return str(exception_info.get("exception_message") or "exception").rstrip(". ")
        return None
    for info in exception_info.values():
        message = exception_message(info)
        if message:
            return message
    return None


def failure_of(result: Any, id_columns: list[str]) -> Failure:
    """A Failure from one of GE's ExpectationValidationResults: its unexpected rows' ids come from the
    ``unexpected_index_list`` records (one dict of id column values per row)."""
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    column = expectation_column({k: kwargs.get(k) for k in ("column", "column_list")})
    res = dict(result.result or {})
    expected = _expected_text(kwargs)

    sample_ids: list[str] = []
    pairs: list[str] = []
    for row in res.get("unexpected_index_list") or []:
        ident = _id_text(row, id_columns) if id_columns else None
        if ident is None:
            continue
        if ident not in sample_ids and len(sample_ids) < MAX_SAMPLE_IDS:
            sample_ids.append(ident)
            if len(pairs) < DETAIL_VALUES and column in row and column not in id_columns:
                pairs.append(f"{ident}: {short(row[column])}")

    error = exception_message(result.exception_info)
    if error:
        detail = f"could not be evaluated: {error}"
    elif config.type == "expect_column_to_exist":
        detail = "column is missing"
    elif "unexpected_count" in res:
        detail = f"{res.get('unexpected_count')} of {res.get('element_count')} rows unexpected"
        if pairs:
            detail += " (" + "; ".join(pairs) + ")"
        else:
            counts = res.get("partial_unexpected_counts") or []
            if counts:
                shown = ", ".join(f"{short(c['value'])} x{c['count']}" for c in counts[:DETAIL_VALUES])
                detail += f" (values: {shown})"
            elif res.get("partial_unexpected_list"):
                detail += f" (values: {short(res['partial_unexpected_list'], DETAIL_VALUES)})"
    elif "observed_value" in res:
        detail = f"observed {short(res['observed_value'])}"
    else:
        detail = "not met"
    if expected:
        detail += f"; {expected}"
    return Failure(expectation=config.type, column=column, sample_ids=sample_ids, detail=detail)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
