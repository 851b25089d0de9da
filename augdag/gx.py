"""Great Expectations (1.x) checks on manifests, the per-check quality gate, and Data Docs.

A suite is a JSON file in GE's own serialized ExpectationSuite format (``expectations/*.json``).
Values that depend on params.yaml are written as ``{"$PARAMETER": "name"}`` in the suite and
supplied at validation time through ``parameters`` (GE's ``expectation_parameters``).

Validation runs against one ephemeral GE context per process (creating it is slow), with a
pandas data source, one dataframe asset and a whole-dataframe batch definition. All GE work
happens under a process-wide lock, so ``validate_frame`` may be called from several threads.
Great Expectations itself is imported lazily: importing it takes seconds.

``validate_frame`` validates and reports; ``require`` raises on any failure. ``gate_frame`` gives
every expectation a name and a mode (``meta.name`` / ``meta.mode`` in the suite, modes overridable
from params): ``filter`` drops the rows the expectation reports as unexpected, ``warn`` reports,
``fail`` raises ExpectationFailed, ``off`` leaves the expectation out. ``build_data_docs`` renders
GE's Data Docs site from saved validation results.
"""

from __future__ import annotations

import ast
import hashlib
import html
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from augdag.errors import DataError, ExpectationFailed, ParamsError

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
    check: str | None = None  # the check's name (gate_frame only)

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


def _fingerprint(df: "pd.DataFrame") -> str:
    """md5 of a frame, a column at a time: what GE records as the batch's pandas_data_fingerprint.

    GE's own hash_pandas_dataframe hashes the frame with pandas and, when a column holds lists or arrays (a
    manifest's soft_label and parent_ids), pickles the whole frame instead: a second copy of it in memory (the
    merge stage's peak on 60,200 rows was 140 MB lower without it). Here such a column is hashed value by value.
    """
    import numpy as np
    import pandas as pd

    def value_bytes(v) -> bytes:
        a = None if v is None else np.asarray(v)
        if a is None or a.dtype == object:
            return b"r" + repr(v).encode()
        return f"{a.dtype}{a.shape}".encode() + a.tobytes()

    h = hashlib.md5(usedforsecurity=False)
    h.update(pd.util.hash_pandas_object(df.index, index=False).to_numpy().tobytes())
    for name in df.columns:
        col = df[name]
        h.update(repr(name).encode() + b"\0")
        try:
            h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes())
        except TypeError:  # unhashable values (lists, arrays)
            for v in col:
                h.update(value_bytes(v))
                h.update(b"\0")
    return h.hexdigest()


def _batch_definition():
    """The cached whole-dataframe batch definition of this process's ephemeral context.
    Call with _LOCK held."""
    if _STATE.get("pid") != os.getpid():
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        from great_expectations.execution_engine import pandas_execution_engine

        # GE fingerprints every pandas batch (batch_markers.pandas_data_fingerprint in the result); see _fingerprint.
        pandas_execution_engine.hash_pandas_dataframe = _fingerprint
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


def _read_json(path: Path, what: str) -> Any:
    """Parsed JSON of `path`; DataError naming `what` and the file when missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what} {path} is not readable JSON: {exc}") from None


def _read_suite_json(path: Path) -> dict:
    data = _read_json(path, "expectation suite")
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


def _check_parameters(suite_path: Path, expectations: list, parameters: dict | None) -> dict:
    params = dict(parameters or {})
    missing = sorted(_parameter_names(expectations) - set(params))
    if missing:
        raise DataError(
            f"expectation suite {suite_path} needs parameter(s) {', '.join(missing)}; "
            f"given: {', '.join(sorted(params)) or 'none'}"
        )
    return params


def _id_columns(df: "pd.DataFrame", id_column: str | Sequence[str] | None) -> list[str]:
    if id_column is None:
        wanted: list[str] = []
    elif isinstance(id_column, str):
        wanted = [id_column]
    else:
        wanted = list(id_column)
    return [c for c in wanted if c in df.columns]


def _result_format(id_columns: list[str]) -> dict[str, Any]:
    result_format: dict[str, Any] = {"result_format": "COMPLETE"}
    if id_columns:
        result_format["unexpected_index_column_names"] = id_columns
    return result_format


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
    params = _check_parameters(suite_path, data["expectations"], parameters)
    id_columns = _id_columns(df, id_column)
    result_format = _result_format(id_columns)

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


# ---------------------------------------------------------------------------------------------
# Quality gate: one name and one mode per expectation

MODES = ("filter", "warn", "fail", "off")
_DEFAULT_MODE = "fail"


@dataclass
class GateResult:
    kept: "pd.DataFrame"  # rows no filter check rejected, in their original order, index reset
    rejected: "pd.DataFrame"  # filtered rows, same columns plus gate_reason ("; "-joined check names)
    warnings: list[Failure]  # warn-mode checks that failed
    checks: dict[str, dict]  # name -> {"mode", "success", "unexpected_count", "element_count"}
    report: ValidationReport  # GE's verdict on the whole suite (every mode but off)


@dataclass
class _Check:
    name: str
    position: int  # index in the suite file
    expectation: str
    column: str | None
    mode: str  # effective mode


def _expectation_column(kwargs: dict) -> str | None:
    column = kwargs.get("column")
    if column is None and kwargs.get("column_list"):
        column = ",".join(str(c) for c in kwargs["column_list"])
    if column is None and kwargs.get("column_A") is not None and kwargs.get("column_B") is not None:
        column = f"{kwargs['column_A']},{kwargs['column_B']}"
    return None if column is None else str(column)


def _check_name(expectation: dict) -> str:
    meta = expectation.get("meta") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(name, str) and name:
        return name
    column = _expectation_column(expectation.get("kwargs") or {})
    return f"{expectation.get('type')}:{column}" if column is not None else str(expectation.get("type"))


def _suite_check_names(suite_path: Path, expectations: list) -> list[str]:
    names = [_check_name(e if isinstance(e, dict) else {}) for e in expectations]
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in seen:
            raise DataError(
                f"expectation suite {suite_path}: expectations {seen[name]} and {position} (from 0) "
                f"are both named '{name}'; give them distinct meta.name values"
            )
        seen[name] = position
    return names


def check_names(suite_path: str | Path) -> list[str]:
    """The check names of a suite, in suite order (meta.name, or ``type:column``)."""
    suite_path = Path(suite_path)
    return _suite_check_names(suite_path, _read_suite_json(suite_path)["expectations"])


def default_modes(suite_path: str | Path) -> dict[str, str]:
    """{check name: the suite's own mode (meta.mode, else the default)} in suite order."""
    suite_path = Path(suite_path)
    expectations = _read_suite_json(suite_path)["expectations"]
    names = _suite_check_names(suite_path, expectations)
    return {name: ((e.get("meta") or {}).get("mode", _DEFAULT_MODE) if isinstance(e, dict) else _DEFAULT_MODE)
            for name, e in zip(names, expectations)}


def modes_for(suite_path: str | Path, modes: Mapping[str, str] | None) -> dict[str, str]:
    """The entries of ``modes`` (a {check name: mode} dict shared by several suites) whose name
    is a check of the suite in ``suite_path``. Names of no check of this suite are dropped here,
    so a misspelt name is only caught where the whole dict goes to one suite's gate_frame."""
    names = set(check_names(suite_path))
    return {name: mode for name, mode in (modes or {}).items() if name in names}


def _is_per_row(expectation: Any) -> bool:
    """A map expectation: GE evaluates it row by row and reports the unexpected rows."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    return isinstance(expectation, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation))


# Table expectations about the columns alone: every chunk of a manifest has the same columns.
_SCHEMA_TYPES = frozenset({
    "expect_column_to_exist", "expect_table_columns_to_match_ordered_list", "expect_table_columns_to_match_set",
    "expect_table_column_count_to_equal", "expect_table_column_count_to_be_between",
})
# Map expectations whose rows are unexpected or not depending on the other rows.
_WHOLE_SET_MAP_TYPES = frozenset({
    "expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique",
    "expect_multicolumn_values_to_be_unique",
})


@dataclass
class CheckSplit:
    """A suite's checks split by what a chunk of rows can decide."""

    row_wise: list[str]  # map and schema checks: their outcome on a set is the sum of their outcomes on its chunks
    set_wide: list[str]  # aggregates (mean, sum, row count...) and uniqueness: they need every row at once
    set_columns: list[str]  # the columns the set-wide checks read, in suite order


def split_checks(suite_path: str | Path) -> CheckSplit:
    """Which checks of a suite can run a chunk of rows at a time, and which need the whole set (and its columns).

    A stage whose output is too large for one frame validates the row-wise checks chunk by chunk and the
    set-wide ones once, on a frame of the set-wide checks' columns only."""
    suite_path = Path(suite_path)
    data = _read_suite_json(suite_path)
    names = _suite_check_names(suite_path, data["expectations"])
    parsed = _suite_from_data(suite_path, data).expectations
    split = CheckSplit([], [], [])
    for name, raw, expectation in zip(names, data["expectations"], parsed):
        kind = raw.get("type")
        if kind in _SCHEMA_TYPES or (_is_per_row(expectation) and kind not in _WHOLE_SET_MAP_TYPES):
            split.row_wise.append(name)
            continue
        split.set_wide.append(name)
        kwargs = raw.get("kwargs") or {}
        for key in ("column", "column_A", "column_B"):
            if isinstance(kwargs.get(key), str) and kwargs[key] not in split.set_columns:
                split.set_columns.append(kwargs[key])
        for c in kwargs.get("column_list") or []:
            if isinstance(c, str) and c not in split.set_columns:
                split.set_columns.append(c)
    return split


def _resolve_checks(suite_path: Path, data: dict, modes: Mapping[str, str] | None) -> list[_Check]:
    expectations = data["expectations"]
    names = _suite_check_names(suite_path, expectations)
    allowed = ", ".join(MODES)
    if modes is None:
        modes = {}
    if not isinstance(modes, Mapping):
        raise ParamsError(
            f"modes for expectation suite {suite_path} must map check names to one of {allowed}; "
            f"got {type(modes).__name__}"
        )
    unknown = [n for n in modes if n not in names]
    if unknown:
        raise ParamsError(
            f"modes for expectation suite {suite_path}: unknown check name(s) "
            f"{', '.join(repr(n) for n in unknown)}; the suite's checks are: {', '.join(names)}"
        )
    for name, mode in modes.items():
        if mode not in MODES:
            raise ParamsError(
                f"modes for expectation suite {suite_path}: check '{name}' has mode {mode!r}; "
                f"allowed modes: {allowed}"
            )

    parsed = _suite_from_data(suite_path, data).expectations  # same order as the file
    checks = []
    for position, (raw, name, expectation) in enumerate(zip(expectations, names, parsed)):
        meta = raw.get("meta") or {}
        suite_mode = meta.get("mode", _DEFAULT_MODE) if isinstance(meta, dict) else _DEFAULT_MODE
        if suite_mode not in MODES:
            raise DataError(
                f"expectation suite {suite_path}: check '{name}' has meta.mode {suite_mode!r}; "
                f"allowed modes: {allowed}"
            )
        mode = modes.get(name, suite_mode)
        if mode == "filter" and not _is_per_row(expectation):
            where = "params" if name in modes else "its meta.mode"
            error = ParamsError if name in modes else DataError
            raise error(
                f"expectation suite {suite_path}: check '{name}' ({raw['type']}) cannot be in mode "
                f"'filter' (set by {where}): it is an aggregate expectation with no per-row results; "
                "use warn, fail or off. Only column map expectations (those reporting unexpected "
                "rows) can filter."
            )
        checks.append(_Check(name, position, raw["type"], _expectation_column(raw.get("kwargs") or {}), mode))
    return checks


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT; pd.NA raises
    except (TypeError, ValueError):
        import pandas as pd

        try:
            return bool(pd.isna(value))
        except (TypeError, ValueError):
            return False


def _same(a: Any, b: Any) -> bool:
    if _is_null(a) or _is_null(b):
        return _is_null(a) and _is_null(b)
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


_INDEX_QUERY = re.compile(r"^df\.filter\(items=(\[.*\]), axis=0\)$", re.S)


def _row_positions(items: Any, n_rows: int) -> list[int] | None:
    if not isinstance(items, list):
        return None
    positions = []
    for item in items:
        if isinstance(item, bool) or not hasattr(item, "__index__"):
            return None
        position = int(item)
        if not 0 <= position < n_rows:
            return None
        positions.append(position)
    return positions


def _unexpected_positions(res: dict, frame: "pd.DataFrame", id_columns: list[str]) -> list[int] | None:
    """Positions in ``frame`` (which has a RangeIndex) of every row GE reported as unexpected, or
    None when they cannot be told for certain.

    With ``unexpected_index_column_names`` GE's unexpected_index_list holds id values, which do
    not identify a row when ids repeat or are null; pandas' unexpected_index_query
    (``df.filter(items=[...], axis=0)``) holds the frame's index labels, here the positions. They
    are used when they agree, row by row, with the id values of unexpected_index_list. Failing
    that, unique non-null ids are mapped back to their rows."""
    rows = res.get("unexpected_index_list")
    if not isinstance(rows, list):
        return None
    n_rows = len(frame)
    if not id_columns:  # GE gave the index labels themselves
        positions = _row_positions(rows, n_rows)
    else:
        positions = None
        query = res.get("unexpected_index_query")
        match = _INDEX_QUERY.match(query.strip()) if isinstance(query, str) else None
        if match:
            try:
                positions = _row_positions(ast.literal_eval(match.group(1)), n_rows)
            except (ValueError, SyntaxError):
                positions = None
        if positions is not None and (
            len(positions) != len(rows)
            or not all(
                isinstance(row, dict) and all(_same(row.get(c), frame[c].iat[p]) for c in id_columns)
                for p, row in zip(positions, rows)
            )
        ):
            positions = None
        if positions is None:
            keys = list(zip(*(frame[c].tolist() for c in id_columns)))
            if any(_is_null(v) for key in keys for v in key) or len(set(keys)) != len(keys):
                return None
            where = {key: p for p, key in enumerate(keys)}
            try:
                positions = [where[tuple(row[c] for c in id_columns)] for row in rows]
            except (KeyError, TypeError):
                return None
    if positions is None:
        return None
    count = res.get("unexpected_count")
    if count is not None and int(count) != len(positions):
        return None
    return sorted(set(positions))


def _plain_count(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def gate_frame(
    df: "pd.DataFrame",
    suite_path: str | Path,
    parameters: dict | None = None,
    modes: Mapping[str, str] | None = None,
    id_column: str | Sequence[str] | None = "sample_id",
    results_path: str | Path | None = None,
) -> GateResult:
    """Validate ``df`` against a suite whose every expectation is a named check with a mode.

    A check's name is its ``meta.name``, else ``<expectation type>:<column>`` (columns joined by
    "," for multi-column expectations; the type alone for table expectations). Its mode is
    ``modes[name]`` if given (params), else its ``meta.mode``, else ``fail``:

    - ``filter``: rows the expectation reports as unexpected go to ``rejected`` (with
      ``gate_reason``, every failed filter check's name in suite order, "; "-joined); the rest is
      ``kept``. Only map expectations (column map, column pair map, multicolumn map) can filter.
      Rows are found through GE's COMPLETE result, all of them, and by position, so duplicate or
      null ids are fine. GE's null handling stands: column map expectations skip null values
      unless they are about nulls, so a null score is not a failure. With ``mostly`` a check may
      pass as a whole and still report unexpected rows; those rows are filtered. A filter check
      whose rows cannot be identified (the expectation raised, e.g. its column is missing)
      counts as failed in ``fail`` mode.
    - ``warn``: a failure is returned in ``warnings`` (a Failure per check) and rows are kept.
    - ``fail``: a failure raises ExpectationFailed naming the suite, every failed fail-mode check
      (name, expectation, column, detail) and up to MAX_SAMPLE_IDS offending ids, after
      ``results_path`` was written.
    - ``off``: the expectation is not run; its parameters need not be given.

    An unknown check name or mode in ``modes``, or ``filter`` asked of an aggregate expectation,
    raises ParamsError (DataError when the suite file itself says so). ``checks`` holds, for
    every check, {"mode", "success", "unexpected_count", "element_count"} (success and counts
    None when off; counts None for aggregate expectations). ``report`` is GE's verdict on all
    checks that ran, whatever their mode. The validation result written to ``results_path`` is
    GE's own; each expectation's meta there carries its effective name and mode.
    """
    suite_path = Path(suite_path)
    data = _read_suite_json(suite_path)
    checks = _resolve_checks(suite_path, data, modes)
    active = [c for c in checks if c.mode != "off"]
    expectations = []
    for check in active:
        raw = dict(data["expectations"][check.position])
        meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
        raw["meta"] = {**meta, "name": check.name, "mode": check.mode}
        expectations.append(raw)
    run_data = {**data, "expectations": expectations}
    params = _check_parameters(suite_path, expectations, parameters)

    frame = df.reset_index(drop=True)
    id_columns = _id_columns(frame, id_column)
    with _LOCK:
        suite = _suite_from_data(suite_path, run_data)
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(suite, expectation_parameters=params, result_format=_result_format(id_columns))
        result_dict = result.to_json_dict() if results_path is not None else None

    by_name = {c.name: c for c in active}
    outcome: dict[str, Any] = {}
    for r in result.results:
        meta = r.expectation_config.meta or {}
        name = meta.get("name") if isinstance(meta, dict) else None
        if name not in by_name or name in outcome:
            raise DataError(
                f"expectation suite {suite_path}: Great Expectations returned a result that cannot "
                f"be matched to a check (meta {meta!r})"
            )
        outcome[name] = r
    if set(outcome) != set(by_name):
        missing = ", ".join(sorted(set(by_name) - set(outcome)))
        raise DataError(f"expectation suite {suite_path}: Great Expectations returned no result for {missing}")

    summary: dict[str, dict] = {}
    failures: list[Failure] = []
    warnings: list[Failure] = []
    fails: list[Failure] = []
    filtered: dict[str, list[int]] = {}
    for check in checks:
        if check.mode == "off":
            summary[check.name] = {"mode": "off", "success": None, "unexpected_count": None, "element_count": None}
            continue
        r = outcome[check.name]
        res = dict(r.result or {})
        summary[check.name] = {
            "mode": check.mode,
            "success": bool(r.success),
            "unexpected_count": _plain_count(res.get("unexpected_count")),
            "element_count": _plain_count(res.get("element_count")),
        }
        failure = None
        if not r.success:
            failure = _failure(r, id_columns)
            failure.check = check.name
            failures.append(failure)
        if check.mode == "filter":
            raised = bool(_exception_message(r.exception_info))
            positions = None if raised else _unexpected_positions(res, frame, id_columns)
            if positions is None and (not r.success or summary[check.name]["unexpected_count"]):
                lost = failure or _failure(r, id_columns)
                lost.check = check.name
                lost.detail = f"filter check whose rows cannot be identified: {lost.detail}"
                fails.append(lost)
            elif positions:
                filtered[check.name] = positions
        elif failure is not None:
            (warnings if check.mode == "warn" else fails).append(failure)

    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    for check in checks:  # suite order
        for position in filtered.get(check.name, ()):
            reasons[position].append(check.name)
    import numpy as np

    rejected_mask = np.array([bool(r) for r in reasons], dtype=bool)
    kept = frame.loc[~rejected_mask].reset_index(drop=True)
    rejected = frame.loc[rejected_mask].reset_index(drop=True)
    rejected = rejected.assign(gate_reason=["; ".join(r) for r in reasons if r])

    report = ValidationReport(suite=suite.name, success=bool(result.success), failures=failures)
    if results_path is not None:
        _write_json_atomic(Path(results_path), result_dict)
    if fails:
        lines = [
            f"Great Expectations suite '{suite.name}' ({suite_path}) failed: "
            f"{len(fails)} check(s) in fail mode not met:"
        ]
        lines += [f"  - {f.line()}" for f in fails]
        if results_path is not None:
            lines.append(f"Validation result: {results_path}")
        raise ExpectationFailed("\n".join(lines))
    return GateResult(kept=kept, rejected=rejected, warnings=warnings, checks=summary, report=report)


# ---------------------------------------------------------------------------------------------
# Data Docs

_DOCS_SITE = "augdag"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class _ErrorRecords(logging.Handler):
    """Collects GE's ERROR log records: its site builder logs a page it failed to render and
    carries on."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _load_result_file(path: Path, strict: bool) -> dict | None:
    data = _read_json(path, "validation result")
    if not (isinstance(data, dict) and isinstance(data.get("results"), list) and data.get("suite_name")):
        if not strict:  # some other JSON file in a results folder
            return None
        raise DataError(
            f"{path} is not a Great Expectations validation result "
            "(a JSON object with 'suite_name' and 'results', as validate_frame/gate_frame write)"
        )
    return data


def _result_entries(results: Any) -> list[tuple[str, Path, dict]]:
    if isinstance(results, (str, os.PathLike)):
        folder = Path(results)
        if not folder.is_dir():
            raise DataError(f"validation results folder {folder} does not exist or is not a folder")
        entries = []
        for path in sorted(folder.glob("*.json")):
            data = _load_result_file(path, strict=False) if path.is_file() else None
            if data is not None:
                entries.append((path.stem, path, data))
        if not entries:
            raise DataError(f"validation results folder {folder} holds no validation result (*.json)")
    else:
        entries = []
        for item in results:
            try:
                name, path = item
            except (TypeError, ValueError):
                raise DataError(f"Data Docs: expected (name, result path) pairs, got {item!r}") from None
            path = Path(path)
            entries.append((str(name), path, _load_result_file(path, strict=True)))
        if not entries:
            raise DataError("Data Docs: no validation results given")
    seen: dict[str, Path] = {}
    named = []
    for name, path, data in entries:
        safe = _SAFE_NAME.sub("_", name).strip("._") or "result"
        if safe in seen:
            raise DataError(
                f"Data Docs: validation results {seen[safe]} and {path} have the same name "
                f"'{safe}'; give them distinct names"
            )
        seen[safe] = path
        named.append((safe, path, data))
    return named


def _run_time(path: Path, data: dict) -> datetime:
    """When the validated batch was loaded (GE's batch marker), else the file's mtime."""
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    markers = meta.get("batch_markers") if isinstance(meta.get("batch_markers"), dict) else {}
    stamp = markers.get("ge_load_time")
    if isinstance(stamp, str):
        try:
            return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)


def _suite_from_results(gx: Any, suite_name: str, data: dict) -> Any:
    """An ExpectationSuite rebuilt from a validation result's expectation configs (with the
    parameter values of that run), for the site's suite page."""
    expectations = []
    for r in data["results"]:
        config = r.get("expectation_config") or {}
        kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
        expectations.append({"type": config.get("type"), "kwargs": kwargs, "meta": config.get("meta") or {}})
    return gx.ExpectationSuite(name=suite_name, expectations=expectations)


def _page_path(context: Any, key: Any, site_root: Path) -> Path | None:
    urls = context.get_docs_sites_urls(resource_identifier=key, site_name=_DOCS_SITE, only_if_exists=True)
    url = urls[0].get("site_url") if urls else None
    if not url:
        return None
    parsed = urllib.parse.urlparse(url)
    path = Path(urllib.parse.unquote(parsed.path))
    try:
        path.relative_to(site_root)
    except ValueError:
        return None
    return path if path.is_file() else None


def _static_links(site_root: Path, pages: list[tuple[str, str, bool, Path, Path | None]]) -> None:
    """Add plain links to the validation pages at the end of index.html: GE draws its index table
    with scripts from CDNs, so offline the table stays empty."""
    index = site_root / "index.html"
    items = []
    for name, suite, success, page, suite_page in pages:
        href = urllib.parse.quote(page.relative_to(site_root).as_posix())
        text = f"{suite} / {name}: {'passed' if success else 'failed'}"
        item = f'<li><a href="{html.escape(href)}">{html.escape(text)}</a>'
        if suite_page is not None:
            suite_href = urllib.parse.quote(suite_page.relative_to(site_root).as_posix())
            item += f' (<a href="{html.escape(suite_href)}">suite {html.escape(suite)}</a>)'
        items.append(item + "</li>")
    block = (
        '\n<div class="container" id="augdag-validation-links">\n'
        "<h3>Validation results</h3>\n"
        "<p>Plain links, for when the table above cannot be drawn (its scripts come from CDNs).</p>\n"
        "<ul>\n" + "\n".join(items) + "\n</ul>\n</div>\n"
    )
    text = index.read_text(encoding="utf-8")
    at = text.lower().rfind("</body>")
    text = text[:at] + block + text[at:] if at >= 0 else text + block
    index.write_text(text, encoding="utf-8")


def build_data_docs(results: str | Path | Sequence[tuple[str, str | Path]], site_dir: str | Path) -> Path:
    """Render Great Expectations' own Data Docs (static HTML) for saved validation results into
    ``site_dir``; returns the path of its index.html.

    ``results`` is a list of (name, path of a validation result JSON written by validate_frame or
    gate_frame), or a folder: every ``*.json`` in it that is a validation result, named by its
    file stem (JSON files there that are not validation results are skipped; unreadable ones
    raise DataError). Only the JSON files are needed: a fresh
    ephemeral GE context gets a filesystem Data Docs site, the results go into its (in-memory)
    validation results store under run name = batch identifier = the name (made path-safe),
    run time = GE's batch load time from the result, and ``context.build_data_docs`` renders the
    site: an index, one page per validation result and one page per suite (rebuilt from the
    expectation configs of the suite's latest result, so with that run's parameter values).
    GE logs, rather than raises, a page it cannot render; here that is a DataError.

    Building needs no network, and the site is built in a temporary sibling of ``site_dir`` that
    then replaces it (an old site is renamed away first, then deleted), so a reader never sees a
    half-built site.

    The pages reference CSS and JavaScript on CDNs (bootstrap, jQuery, bootstrap-table, Font
    Awesome, vega from unpkg.com, cdnjs, jsdelivr, code.jquery.com, bootstrapcdn) and GE's logo on
    S3; GE's own stylesheet, fonts and images are copied under ``static/``. Offline the pages
    still open: the validation and suite pages are rendered HTML, unstyled, with every result
    readable. GE's index table, however, is drawn by bootstrap-table from a CDN, so offline it
    stays empty; therefore a plain list of links to every validation page (and its suite page)
    is added at the end of index.html.
    """
    site_dir = Path(site_dir)
    entries = _result_entries(results)
    if site_dir.exists() and not site_dir.is_dir():
        raise DataError(f"Data Docs folder {site_dir} exists and is not a folder")
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}.", suffix=".tmp", dir=site_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        _render_site(entries, tmp)
        old = None
        if site_dir.exists():
            old = site_dir.parent / f".{site_dir.name}.old-{uuid.uuid4().hex}"
            os.rename(site_dir, old)
        try:
            os.rename(tmp, site_dir)
        except BaseException:
            if old is not None:
                os.rename(old, site_dir)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return site_dir / "index.html"


def _render_site(entries: list[tuple[str, Path, dict]], site_root: Path) -> None:
    with _LOCK:
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context import set_context
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        context = gx.get_context(mode="ephemeral")  # also becomes GE's "current" context
        try:
            context.add_data_docs_site(
                _DOCS_SITE,
                {
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(site_root),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "site_section_builders": {
                        "profiling": "None",  # GE's spelling of "no such section"
                        # By default, run names containing "profiling" are left out.
                        "validations": {"run_name_filter": {"matches_regex": ".*"}},
                    },
                },
            )
            store = context.validation_results_store
            keyed = []
            latest: dict[str, tuple[datetime, dict]] = {}
            for name, path, data in entries:
                try:
                    result = store.deserialize(data)
                except Exception as exc:  # marshmallow ValidationError, TypeError...
                    raise DataError(f"{path} is not a valid Great Expectations validation result: {exc}") from None
                run_time = _run_time(path, data)
                key = ValidationResultIdentifier(
                    expectation_suite_identifier=ExpectationSuiteIdentifier(name=result.suite_name),
                    run_id=RunIdentifier(run_name=name, run_time=run_time),
                    batch_identifier=name,
                )
                store.set(key, result)
                keyed.append((name, result.suite_name, bool(result.success), key))
                if result.suite_name not in latest or run_time >= latest[result.suite_name][0]:
                    latest[result.suite_name] = (run_time, data)
            for suite_name, (_, data) in latest.items():
                try:
                    suite = _suite_from_results(gx, suite_name, data)
                except Exception:  # the suite page is a convenience; the validation page has it all
                    continue
                context.suites.add(suite)

            errors = _ErrorRecords()
            gx_logger = logging.getLogger("great_expectations")
            gx_logger.addHandler(errors)
            try:
                context.build_data_docs(site_names=[_DOCS_SITE])
            finally:
                gx_logger.removeHandler(errors)
            if errors.messages:
                message = errors.messages[0]
                # "An unexpected Exception occurred ... follows: TypeError: "...".  Traceback: ..."
                found = re.search(r"follows:\s*(.*?)(?:\.\s+Traceback:|$)", message, re.S)
                detail = " ".join((found.group(1) if found else message).split())
                raise DataError(f"Great Expectations could not render Data Docs: {detail[:500]}")
            if not (site_root / "index.html").is_file():
                raise DataError("Great Expectations wrote no Data Docs index.html")
            pages = []
            for name, suite_name, success, key in keyed:
                page = _page_path(context, key, site_root)
                if page is None:
                    raise DataError(f"Great Expectations wrote no Data Docs page for validation result '{name}'")
                suite_page = _page_path(context, ExpectationSuiteIdentifier(name=suite_name), site_root)
                pages.append((name, suite_name, success, page, suite_page))
        finally:
            if _STATE.get("pid") == os.getpid():  # give back GE's current context
                set_context(_STATE["context"])
    _static_links(site_root, pages)
