"""Great Expectations (1.x) checks on manifests.

A suite is a JSON file in GE's own serialized ExpectationSuite format (``expectations/*.json``).
Values that depend on params.yaml are written as ``{"$PARAMETER": "name"}`` in the suite and
supplied at validation time through ``parameters`` (GE's ``expectation_parameters``).

Validation runs against one ephemeral GE context per process (creating it is slow), with a
pandas data source, one dataframe asset and a whole-dataframe batch definition. All GE work
happens under a process-wide lock, so ``validate_frame`` may be called from several threads.
Great Expectations itself is imported lazily: importing it takes seconds.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from augdag.errors import DataError, ExpectationFailed

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# Keep GE quiet and offline. GX 1.x reads GX_ANALYTICS_ENABLED when a context is created;
# set it before great_expectations is first imported.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

MAX_SAMPLE_IDS = 20
_DETAIL_VALUES = 5

_DATASOURCE = "augdag"
_ASSET = "manifest"
_BATCH_DEFINITION = "whole_frame"

# Kwargs that describe how an expectation runs, not what it expects.
_NON_EXPECTATION_KWARGS = {
    "column", "column_list", "batch_id", "result_format", "include_config", "catch_exceptions",
    "row_condition", "condition_parser", "meta", "notes", "description", "windows",
}


@dataclass
class Failure:
    expectation: str  # e.g. "expect_column_values_to_be_in_set"
    column: str | None
    sample_ids: list[str] = field(default_factory=list)  # offending ids, at most MAX_SAMPLE_IDS
    detail: str = ""  # short human text: observed value / counts / what was expected

    def line(self) -> str:
        where = f" [column {self.column}]" if self.column else ""
        text = f"{self.expectation}{where}: {self.detail}"
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


# ---------------------------------------------------------------------------------------------
# Context (one per process) and locking

_LOCK = threading.RLock()
_STATE: dict[str, Any] = {}  # pid, context, batch_definition


def _reset_after_fork() -> None:
    # A child forked while another thread held the lock would otherwise deadlock.
    global _LOCK
    _LOCK = threading.RLock()
    _STATE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _batch_definition():
    """The cached whole-dataframe batch definition of this process's ephemeral context.
    Call with _LOCK held."""
    if _STATE.get("pid") != os.getpid():
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        # No tqdm "Calculating Metrics" bars on stderr.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas(_DATASOURCE).add_dataframe_asset(_ASSET)
        batch_definition = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)
        _STATE.update(pid=os.getpid(), context=context, batch_definition=batch_definition)
    return _STATE["batch_definition"]


# ---------------------------------------------------------------------------------------------
# Suites


def _parameter_names(obj: Any) -> set[str]:
    """Every name used as {"$PARAMETER": name} anywhere in obj."""
    names: set[str] = set()
    if isinstance(obj, dict):
        if set(obj) == {"$PARAMETER"} and isinstance(obj["$PARAMETER"], str):
            names.add(obj["$PARAMETER"])
        else:
            for value in obj.values():
                names |= _parameter_names(value)
    elif isinstance(obj, list):
        for value in obj:
            names |= _parameter_names(value)
    return names


def _read_suite_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"expectation suite {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"expectation suite {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise DataError(
            f"expectation suite {path} must be a GE ExpectationSuite object with "
            "'name' and an 'expectations' list"
        )
    return data


def load_suite(path: str | Path):
    """Read a suite file into a ``great_expectations.ExpectationSuite``.

    GE drops an expectation it cannot parse with only a log line; here that is an error."""
    path = Path(path)
    return _suite_from_data(path, _read_suite_json(path))


def _suite_from_data(path: Path, data: dict):
    import great_expectations as gx

    expected = len(data["expectations"])
    with _LOCK:
        try:
            suite = gx.ExpectationSuite(**data)
        except Exception as exc:  # GE raises ValueError, TypeError, its own errors...
            raise DataError(f"expectation suite {path} is not a valid ExpectationSuite: {exc}") from None
    if len(suite.expectations) != expected:
        raise DataError(
            f"expectation suite {path}: {expected - len(suite.expectations)} "
            "expectation(s) could not be parsed by Great Expectations (check 'type' and 'kwargs')"
        )
    return suite


# ---------------------------------------------------------------------------------------------
# Results -> report


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so messages read 31, not np.int64(31)."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        try:
            return value.item()
        except (ValueError, TypeError):
            return value
    return value


def _short(value: Any, limit: int = 10) -> str:
    if isinstance(value, (list, tuple, set)):
        items = list(value)
        text = ", ".join(repr(_plain(v)) for v in items[:limit])
        if len(items) > limit:
            text += f", ... ({len(items)} in all)"
        return "[" + text + "]"
    return repr(_plain(value))


def _expected_text(kwargs: dict) -> str:
    parts = [
        f"{key}={_short(value)}"
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


def _exception_message(exception_info: Any) -> str | None:
    """GE gives either {"raised_exception": ..., "exception_message": ...} or, when a metric
    failed, a dict of such dicts keyed by metric id."""
    if not isinstance(exception_info, dict):
        return None
    if "raised_exception" in exception_info:
        if exception_info.get("raised_exception"):
            return str(exception_info.get("exception_message") or "exception").rstrip(". ")
        return None
    for info in exception_info.values():
        message = _exception_message(info)
        if message:
            return message
    return None


def _failure(result: Any, id_columns: list[str]) -> Failure:
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    column = kwargs.get("column")
    if column is None and kwargs.get("column_list"):
        column = ",".join(str(c) for c in kwargs["column_list"])
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
            if len(pairs) < _DETAIL_VALUES and column in row and column not in id_columns:
                pairs.append(f"{ident}: {_short(row[column])}")

    error = _exception_message(result.exception_info)
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
                shown = ", ".join(
                    f"{_short(c['value'])} x{c['count']}" for c in counts[:_DETAIL_VALUES]
                )
                detail += f" (values: {shown})"
            elif res.get("partial_unexpected_list"):
                detail += f" (values: {_short(res['partial_unexpected_list'], _DETAIL_VALUES)})"
    elif "observed_value" in res:
        detail = f"observed {_short(res['observed_value'])}"
    else:
        detail = "not met"
    if expected:
        detail += f"; {expected}"
    return Failure(expectation=config.type, column=column, sample_ids=sample_ids, detail=detail)


def _suite_position(suite: Any, failure: Failure) -> int:
    """Index of the failure's expectation in the suite: GE returns results in its own order."""
    for position, expectation in enumerate(suite.expectations):
        config = expectation.configuration
        column = config.kwargs.get("column")
        if column is None and config.kwargs.get("column_list"):
            column = ",".join(str(c) for c in config.kwargs["column_list"])
        if config.type == failure.expectation and column == failure.column:
            return position
    return len(suite.expectations)


def _write_json_atomic(path: Path, data: dict) -> None:
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


# ---------------------------------------------------------------------------------------------
# Public API


def validate_frame(
    df: "pd.DataFrame",
    suite_path: str | Path,
    parameters: dict | None = None,
    id_column: str | Sequence[str] | None = "sample_id",
    results_path: str | Path | None = None,
) -> ValidationReport:
    """Validate ``df`` against the suite in ``suite_path``.

    ``parameters`` supplies every ``{"$PARAMETER": name}`` of the suite. ``id_column`` names
    the column(s) whose values identify offending rows (a list gives ids like
    ``split=train,label=3``); an id column the frame lacks is ignored. If ``results_path`` is
    given, GE's validation result (``to_json_dict()``) is written there atomically.
    """
    suite_path = Path(suite_path)
    data = _read_suite_json(suite_path)
    params = dict(parameters or {})
    missing = sorted(_parameter_names(data["expectations"]) - set(params))
    if missing:
        raise DataError(
            f"expectation suite {suite_path} needs parameter(s) {', '.join(missing)}; "
            f"given: {', '.join(sorted(params)) or 'none'}"
        )

    if id_column is None:
        wanted: list[str] = []
    elif isinstance(id_column, str):
        wanted = [id_column]
    else:
        wanted = list(id_column)
    id_columns = [c for c in wanted if c in df.columns]
    result_format: dict[str, Any] = {"result_format": "COMPLETE"}
    if id_columns:
        result_format["unexpected_index_column_names"] = id_columns

    with _LOCK:
        suite = _suite_from_data(suite_path, data)
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(suite, expectation_parameters=params, result_format=result_format)
        result_dict = result.to_json_dict() if results_path is not None else None

    failures = [_failure(r, id_columns) for r in result.results if not r.success]
    failures.sort(key=lambda f: _suite_position(suite, f))
    report = ValidationReport(suite=suite.name, success=bool(result.success), failures=failures)
    if results_path is not None:
        _write_json_atomic(Path(results_path), result_dict)
    return report


def require(report: ValidationReport) -> None:
    """Raise ExpectationFailed with the report's message unless it passed."""
    if not report.success:
        raise ExpectationFailed(report.message())
