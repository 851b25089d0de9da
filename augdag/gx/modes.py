"""A suite's expectations as named checks with modes, run with Great Expectations.

A check's name is its ``meta.name``, else ``<expectation type>:<column>`` (columns joined by "," for
multi-column expectations; the type alone for table expectations). Its mode is ``modes[name]`` if given
(params ``quality.modes``), else its ``meta.mode``, else ``fail``: ``warn`` reports a failure, ``fail``
raises ExpectationFailed, ``off`` leaves the expectation out. Great Expectations validates a whole set and
picks no rows, so no suite check can be in mode ``filter``: the per-sample checks that filter are plain
code (augdag.checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from augdag.errors import DataError, ExpectationFailed, ParamsError
from augdag.gx.results import Failure, ValidationReport, expectation_column, failure_of, write_json_atomic
from augdag.gx.suites import check_parameters, id_columns, read_suite_json, run_validation, suite_from_data

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MODES = ("filter", "warn", "fail", "off")
DEFAULT_MODE = "fail"


def _check_name(expectation: dict) -> str:
    meta = expectation.get("meta") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(name, str) and name:
        return name
    column = expectation_column(expectation.get("kwargs") or {})
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
    return _suite_check_names(suite_path, read_suite_json(suite_path)["expectations"])


def _suite_mode(expectation: Any) -> Any:
    meta = expectation.get("meta") if isinstance(expectation, dict) else None
    return meta.get("mode", DEFAULT_MODE) if isinstance(meta, dict) else DEFAULT_MODE


def default_modes(suite_path: str | Path) -> dict[str, str]:
    """{check name: the suite's own mode (meta.mode, else the default)} in suite order."""
    suite_path = Path(suite_path)
    expectations = read_suite_json(suite_path)["expectations"]
    return dict(zip(_suite_check_names(suite_path, expectations), map(_suite_mode, expectations)))


def modes_for(suite_path: str | Path, modes: Mapping[str, str] | None) -> dict[str, str]:
    """The entries of ``modes`` (a {check name: mode} dict shared by several suites) whose name
    is a check of the suite in ``suite_path``. Names of no check of this suite are dropped here,
    so a misspelt name is only caught where the whole dict goes to one suite's run_suite."""
    names = set(check_names(suite_path))
    return {name: mode for name, mode in (modes or {}).items() if name in names}


def validate_modes(where: str, names: Sequence[str], modes: Mapping[str, str] | None) -> dict[str, str]:
    """``modes`` checked against the check ``names`` of `where` (a suite or a gate): ParamsError for
    something other than a mapping, an unknown name or an unknown mode."""
    allowed = ", ".join(MODES)
    if modes is None:
        return {}
    if not isinstance(modes, Mapping):
        raise ParamsError(f"modes for {where} must map check names to one of {allowed}; got {type(modes).__name__}")
    unknown = [n for n in modes if n not in names]
    if unknown:
        raise ParamsError(f"modes for {where}: unknown check name(s) {', '.join(repr(n) for n in unknown)}; "
                          f"its checks are: {', '.join(names)}")
    for name, mode in modes.items():
        if mode not in MODES:
            raise ParamsError(f"modes for {where}: check '{name}' has mode {mode!r}; allowed modes: {allowed}")
    return dict(modes)


def _is_per_row(expectation: Any) -> bool:
    """A map expectation: GE evaluates it row by row."""
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
    data = read_suite_json(suite_path)
    names = _suite_check_names(suite_path, data["expectations"])
    parsed = suite_from_data(suite_path, data).expectations
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


def _effective_modes(suite_path: Path, names: list[str], expectations: list, modes: dict) -> dict[str, str]:
    allowed = ", ".join(MODES)
    out = {}
    for name, raw in zip(names, expectations):
        suite_mode = _suite_mode(raw)
        if suite_mode not in MODES:
            raise DataError(f"expectation suite {suite_path}: check '{name}' has meta.mode {suite_mode!r}; "
                            f"allowed modes: {allowed}")
        mode = modes.get(name, suite_mode)
        if mode == "filter":
            where, error = ("params", ParamsError) if name in modes else ("its meta.mode", DataError)
            raise error(
                f"expectation suite {suite_path}: check '{name}' ({raw.get('type')}) cannot be in mode 'filter' "
                f"(set by {where}): Great Expectations validates the set as a whole and picks no rows; use warn, "
                "fail or off. Only a gate's per-sample row checks (augdag.checks) filter."
            )
        out[name] = mode
    return out


@dataclass
class SuiteResult:
    checks: dict[str, dict]  # name -> {"mode", "success", "unexpected_count", "element_count"}, suite order
    warnings: list[Failure]  # warn-mode checks not met
    fails: list[Failure]  # fail-mode checks not met (run_suite raised for them unless told not to)
    report: ValidationReport  # GE's verdict on every check that ran, whatever its mode


def _count(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def fail_message(title: str, fails: list[Failure], results_path: str | Path | None) -> str:
    lines = [f"{title} failed: {len(fails)} check(s) in fail mode not met:"]
    lines += [f"  - {f.line()}" for f in fails]
    if results_path is not None:
        lines.append(f"Validation result: {results_path}")
    return "\n".join(lines)


def run_suite(
    df: "pd.DataFrame",
    suite_path: str | Path,
    parameters: dict | None = None,
    modes: Mapping[str, str] | None = None,
    id_column: str | Sequence[str] | None = "sample_id",
    results_path: str | Path | None = None,
    raise_on_fail: bool = True,
) -> SuiteResult:
    """Validate ``df`` against a suite whose every expectation is a named check with a mode (module note).

    A warn-mode check that fails is returned in ``warnings``; fail-mode ones raise ExpectationFailed naming
    the suite, every failed fail-mode check (name, expectation, column, detail) and up to MAX_SAMPLE_IDS
    offending ids, after ``results_path`` was written (``raise_on_fail=False``: returned in ``fails``). An off
    check is not run and its parameters need not be given. An unknown check name or mode in ``modes`` raises
    ParamsError, as does ``filter`` (DataError when the suite file itself says so). ``checks`` holds, for every
    check, {"mode", "success", "unexpected_count", "element_count"} (success and counts None when off; counts
    None for aggregate expectations). The result written to ``results_path`` is GE's own; each expectation's
    meta there carries its effective name and mode.
    """
    suite_path = Path(suite_path)
    data = read_suite_json(suite_path)
    expectations = data["expectations"]
    names = _suite_check_names(suite_path, expectations)
    wanted = validate_modes(f"expectation suite {suite_path}", names, modes)
    effective = _effective_modes(suite_path, names, expectations, wanted)
    active = []
    for name, raw in zip(names, expectations):
        if effective[name] != "off":
            meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
            active.append({**raw, "meta": {**meta, "name": name, "mode": effective[name]}})
    params = check_parameters(suite_path, active, parameters)
    ids = id_columns(df, id_column)
    suite, result, as_json = run_validation(df, suite_path, {**data, "expectations": active}, params, ids,
                                            results_path is not None)

    outcome: dict[str, Any] = {}
    for r in result.results:
        meta = r.expectation_config.meta or {}
        name = meta.get("name") if isinstance(meta, dict) else None
        if name not in effective or effective[name] == "off" or name in outcome:
            raise DataError(f"expectation suite {suite_path}: Great Expectations returned a result that cannot "
                            f"be matched to a check (meta {meta!r})")
        outcome[name] = r
    if len(outcome) != len(active):
        missing = ", ".join(sorted(e["meta"]["name"] for e in active if e["meta"]["name"] not in outcome))
        raise DataError(f"expectation suite {suite_path}: Great Expectations returned no result for {missing}")

    checks: dict[str, dict] = {}
    failures: list[Failure] = []
    warnings: list[Failure] = []
    fails: list[Failure] = []
    for name in names:
        mode = effective[name]
        if mode == "off":
            checks[name] = {"mode": "off", "success": None, "unexpected_count": None, "element_count": None}
            continue
        r = outcome[name]
        res = dict(r.result or {})
        checks[name] = {"mode": mode, "success": bool(r.success),
                        "unexpected_count": _count(res.get("unexpected_count")),
                        "element_count": _count(res.get("element_count"))}
        if not r.success:
            failure = failure_of(r, ids)
            failure.check = name
            failures.append(failure)
            (warnings if mode == "warn" else fails).append(failure)

    if results_path is not None:
        write_json_atomic(Path(results_path), as_json)
    if fails and raise_on_fail:
        title = f"Great Expectations suite '{suite.name}' ({suite_path})"
        raise ExpectationFailed(fail_message(title, fails, results_path))
    report = ValidationReport(suite=suite.name, success=bool(result.success), failures=failures)
    return SuiteResult(checks=checks, warnings=warnings, fails=fails, report=report)
