"""Expectation suites: read them, validate a frame against one with Great Expectations, report.

A suite is a JSON file in GE's own serialized ExpectationSuite format (``expectations/*.json``). Values that
depend on params.yaml are written as ``{"$PARAMETER": "name"}`` in the suite and supplied at validation time
through ``parameters`` (GE's ``expectation_parameters``).

``validate_frame`` validates and reports; ``require`` raises ExpectationFailed on any failure. Validation
runs under the process's GE lock (augdag.gx.context), so it may be called from several threads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from augdag.errors import DataError, ExpectationFailed
from augdag.gx import context
from augdag.gx.results import ValidationReport, expectation_column, failure_of, write_json_atomic

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def read_json(path: Path, what: str) -> Any:
    """Parsed JSON of `path`; DataError naming `what` and the file when missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what} {path} is not readable JSON: {exc}") from None


def read_suite_json(path: Path) -> dict:
    data = read_json(path, "expectation suite")
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
    return suite_from_data(path, read_suite_json(path))


def suite_from_data(path: Path, data: dict):
    import great_expectations as gx

    expected = len(data["expectations"])
    with context.lock():
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


def check_parameters(suite_path: Path, expectations: list, parameters: dict | None) -> dict:
    """The parameters the expectations use; DataError naming any that `parameters` lacks."""
    params = dict(parameters or {})
    needed = _parameter_names(expectations)
    missing = sorted(needed - set(params))
    if missing:
        raise DataError(
            f"expectation suite {suite_path} needs parameter(s) {', '.join(missing)}; "
            f"given: {', '.join(sorted(params)) or 'none'}"
        )
    return {k: v for k, v in params.items() if k in needed}


def id_columns(df: "pd.DataFrame", id_column: str | Sequence[str] | None) -> list[str]:
    """The id column(s) asked for that the frame has."""
    if id_column is None:
        wanted: list[str] = []
    elif isinstance(id_column, str):
        wanted = [id_column]
    else:
        wanted = list(id_column)
    return [c for c in wanted if c in df.columns]


def _hashable_view(df: "pd.DataFrame") -> "pd.DataFrame":
    """``df`` with each column of lists or arrays (a manifest's soft_label, parent_ids) holding tuples instead.

    GE fingerprints every pandas batch with pandas' hash, and pickles the whole frame when a column's values
    cannot be hashed: a second copy of it in memory, which raised the merge stage's peak.
    Tuples hash; nulls stay nulls and the values stay the values, so what the suites check is unchanged."""
    import numpy as np

    swap = {}
    for name in df.columns:
        col = df[name]
        if col.dtype != object:
            continue
        first = next((v for v in col if v is not None and not (isinstance(v, float) and v != v)), None)
        if isinstance(first, (list, np.ndarray)):
            swap[name] = [tuple(v.tolist() if isinstance(v, np.ndarray) else v)
                          if isinstance(v, (list, np.ndarray)) else v for v in col]
    return df.assign(**swap) if swap else df


def run_validation(df: "pd.DataFrame", suite_path: Path, data: dict, parameters: dict, ids: list[str],
                   as_json: bool = False) -> tuple[Any, Any, dict | None]:
    """(suite, GE's ExpectationSuiteValidationResult, its JSON dict if ``as_json``) of ``df`` against the suite
    in ``data``; COMPLETE results: every unexpected row, identified by its ``ids`` column values."""
    result_format: dict[str, Any] = {"result_format": "COMPLETE"}
    if ids:
        result_format["unexpected_index_column_names"] = ids
    view = _hashable_view(df)
    with context.lock():
        suite = suite_from_data(suite_path, data)
        batch = context.batch_definition().get_batch(batch_parameters={"dataframe": view})
        result = batch.validate(suite, expectation_parameters=parameters, result_format=result_format)
        return suite, result, result.to_json_dict() if as_json else None


def _suite_position(suite: Any, expectation: str, column: str | None) -> int:
    """Index of an expectation in the suite: GE returns results in its own order."""
    for position, e in enumerate(suite.expectations):
        config = e.configuration
        if config.type == expectation and expectation_column(
                {k: config.kwargs.get(k) for k in ("column", "column_list")}) == column:
            return position
    return len(suite.expectations)


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
    data = read_suite_json(suite_path)
    params = check_parameters(suite_path, data["expectations"], parameters)
    ids = id_columns(df, id_column)
    suite, result, as_json = run_validation(df, suite_path, data, params, ids, results_path is not None)
    failures = [failure_of(r, ids) for r in result.results if not r.success]
    failures.sort(key=lambda f: _suite_position(suite, f.expectation, f.column))
    if results_path is not None:
        write_json_atomic(Path(results_path), as_json)
    return ValidationReport(suite=suite.name, success=bool(result.success), failures=failures)


def require(report: ValidationReport) -> None:
    """Raise ExpectationFailed with the report's message unless it passed."""
    if not report.success:
        raise ExpectationFailed(report.message())
