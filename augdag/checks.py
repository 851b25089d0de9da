"""The quality gate's per-sample checks: plain vectorised masks over the score columns.

A gate is a Great Expectations suite (the dataset-level checks: schema, nulls, score ranges, parents; GE
validates them on the whole set, augdag.gx) plus row checks: one comparison per row of one column against
a threshold from params. A row check is

- ``min``: column >= threshold;
- ``within``: |column| <= threshold (the outlier z against sigma);
- ``length``: lo <= len(column) <= hi, threshold (lo, hi), characters;
- ``matches``: the regex ``value`` is found in the column's text;
- ``equals``: column == ``value``.

A null value is not a failure (no score: nothing to judge), and a null threshold turns its check off. Each
check has a mode: ``filter`` (the default: the row goes to ``rejected`` with ``gate_reason``, every failed
filter check's name in gate order, "; "-joined), ``warn`` (reported, the row kept), ``fail`` (the run stops
with ExpectationFailed naming the check and the offending ids) or ``off``; params ``quality.modes`` sets
them by name, for the suite's checks too (which cannot filter: GE picks no rows).

``GATES`` are the gates params ``quality.modes`` names checks of.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from augdag import gx
from augdag.errors import DataError, ExpectationFailed, ParamsError
from augdag.gx.results import DETAIL_VALUES, MAX_SAMPLE_IDS, Failure, ValidationReport, short
from augdag.gx.suites import id_columns
from augdag.layout import EXPECTATIONS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

KINDS = ("min", "within", "length", "matches", "equals")


@dataclass(frozen=True)
class RowCheck:
    name: str  # its name in params quality.modes
    column: str
    kind: str  # one of KINDS
    param: str | None = None  # the parameter holding its threshold; None: a fixed rule (``value``)
    value: Any = None  # the regex of ``matches``, the value of ``equals``
    mode: str = "filter"  # its default mode

    def __post_init__(self):
        fixed = self.kind in ("matches", "equals")  # a rule without a threshold
        if self.kind not in KINDS or self.mode not in gx.MODES or (self.param is None) != fixed:
            raise ValueError(f"row check {self.name}: kind {self.kind!r}, param {self.param!r}, mode {self.mode!r}")

    def rule(self, threshold: Any = None) -> str:
        """What a row must satisfy, e.g. ``psnr >= 30.0``."""
        c, t = self.column, threshold
        if self.kind == "min":
            return f"{c} >= {t!r}"
        if self.kind == "within":
            return f"|{c}| <= {t!r}"
        if self.kind == "length":
            return f"{t[0]!r} <= len({c}) <= {t[1]!r}"
        return f"{c} matches {self.value!r}" if self.kind == "matches" else f"{c} == {self.value!r}"

    def unexpected(self, frame: "pd.DataFrame", threshold: Any = None) -> np.ndarray:
        """Per row of ``frame``: the value is not null and breaks the rule."""
        col = frame[self.column]
        present = col.notna().to_numpy(bool)
        if self.kind in ("min", "within"):
            try:
                x = col.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                raise DataError(f"row check '{self.name}': column {self.column} is not numeric") from None
            with np.errstate(invalid="ignore"):
                ok = x >= threshold if self.kind == "min" else np.abs(x) <= threshold
            return present & ~ok
        if self.kind == "equals":
            return present & ~col.isin([self.value]).to_numpy(bool)
        text = col[present].astype(str)
        if self.kind == "matches":
            ok = text.str.contains(self.value, regex=True).to_numpy(bool)
        else:
            n, (lo, hi), ok = text.str.len().to_numpy(), threshold, np.ones(len(text), bool)
            if lo is not None:
                ok &= n >= lo
            if hi is not None:
                ok &= n <= hi
        bad = np.zeros(len(col), bool)
        bad[present] = ~ok
        return bad


@dataclass(frozen=True)
class Gate:
    suite: Path  # the Great Expectations suite of its dataset-level checks
    rows: tuple[RowCheck, ...] = ()  # its per-sample checks, in gate order (after the suite's)

    def check_names(self) -> list[str]:
        suite, rows = gx.check_names(self.suite), [c.name for c in self.rows]
        twice = sorted(set(suite) & set(rows)) or sorted({n for n in rows if rows.count(n) > 1})
        if twice:
            raise DataError(f"the gate of expectation suite {self.suite}: check name(s) {twice} used twice")
        return suite + rows

    def default_modes(self) -> dict[str, str]:
        return {**gx.default_modes(self.suite), **{c.name: c.mode for c in self.rows}}

    def modes_for(self, modes: Mapping[str, str] | None) -> dict[str, str]:
        """The entries of ``modes`` (shared by several gates) that name a check of this gate."""
        names = set(self.check_names())
        return {name: mode for name, mode in (modes or {}).items() if name in names}


def _at_least(name: str, column: str, param: str) -> RowCheck:
    return RowCheck(name, column, "min", param)


OUTLIER = RowCheck("outlier", "outlier_z", "within", "sigma")
BRANCH = Gate(EXPECTATIONS / "branch.json", (
    _at_least("psnr", "psnr", "psnr_min"), _at_least("ssim", "ssim", "ssim_min"),
    _at_least("in_frame", "in_frame", "in_frame_min"), _at_least("label_consistency", "label_prob", "label_prob_min"),
    OUTLIER,
))
TEXT_BRANCH = Gate(EXPECTATIONS / "text_branch.json", (
    RowCheck("text_nonempty", "text", "matches", value=r"\S"), RowCheck("text_length", "text", "length", "text_length"),
    _at_least("english", "english_share", "english_share_min"),
    RowCheck("duplicate", "is_duplicate", "equals", value=False),
    _at_least("semantic_similarity", "semantic_similarity", "similarity_min"),
    _at_least("label_consistency", "label_prob", "label_prob_min"), OUTLIER,
))
AUDIO_BRANCH = Gate(EXPECTATIONS / "audio_branch.json", (_at_least("snr", "snr", "snr_min"),) + BRANCH.rows)
MERGED, MERGED_CLASSES = Gate(EXPECTATIONS / "merged.json"), Gate(EXPECTATIONS / "merged_classes.json")
GATES = (BRANCH, MERGED, MERGED_CLASSES, TEXT_BRANCH, AUDIO_BRANCH)  # the gates whose checks params quality.modes names


def default_modes() -> dict[str, str]:
    """{check name: its default mode} over GATES."""
    return {k: v for g in GATES for k, v in g.default_modes().items()}


def check_modes(modes: Mapping[str, str], where: str = "params.yaml: quality.modes") -> None:
    """Every name in ``modes`` must be a check of GATES, and only row checks can be in mode filter."""
    known = set().union(*(g.check_names() for g in GATES))
    unknown = sorted(set(modes) - known)
    if unknown:
        raise ParamsError(f"{where}: unknown check name(s) {unknown}; checks: {', '.join(sorted(known))}")
    rows = sorted({c.name for g in GATES for c in g.rows})
    for name, mode in modes.items():
        if mode == "filter" and name not in rows:
            raise ParamsError(f"{where}.{name} = filter: a check Great Expectations runs on the whole set picks no "
                              f"rows; use warn, fail or off (the checks that filter: {', '.join(rows)})")


@dataclass
class GateResult:
    kept: "pd.DataFrame"  # rows no filter check rejected, in their original order, index reset
    rejected: "pd.DataFrame"  # filtered rows, same columns plus gate_reason ("; "-joined check names)
    warnings: list[Failure]  # warn-mode checks that failed
    checks: dict[str, dict]  # name -> {"mode", "success", "unexpected_count", "element_count"}, gate order
    report: ValidationReport  # GE's verdict on the suite's checks that ran


def _row_failure(check: RowCheck, threshold: Any, frame: "pd.DataFrame", bad: np.ndarray, ids: list[str]) -> Failure:
    where = np.flatnonzero(bad)
    sample_ids: list[str] = []
    pairs = [f"values: {short(frame[check.column].iloc[where].tolist(), DETAIL_VALUES)}"] if not ids else []
    for i in where if ids else ():
        ident = str(frame[ids[0]].iat[i]) if len(ids) == 1 else ",".join(f"{c}={frame[c].iat[i]}" for c in ids)
        if ident in sample_ids:
            continue
        sample_ids.append(ident)
        if len(pairs) < DETAIL_VALUES:
            pairs.append(f"{ident}: {short(frame[check.column].iat[i])}")
        if len(sample_ids) == MAX_SAMPLE_IDS:
            break
    detail = f"{len(where)} of {len(frame)} rows unexpected" + (f" ({'; '.join(pairs)})" if len(where) else "")
    return Failure(check.rule(threshold), check.column, sample_ids, detail, check.name)


def gate_frame(
    df: "pd.DataFrame",
    gate: Gate,
    parameters: dict | None = None,
    modes: Mapping[str, str] | None = None,
    id_column: str | Sequence[str] | None = "sample_id",
    results_path: str | Path | None = None,
) -> GateResult:
    """``df`` through a gate: Great Expectations validates its suite (results written to ``results_path``),
    then its row checks decide each row (module note).

    ``parameters`` holds the suite's ``$PARAMETER`` values and the row checks' thresholds. ``modes`` sets a
    check's mode by name (ParamsError for an unknown name or mode, or filter asked of a suite check). Every
    fail-mode check not met, of the suite or a row check, is named in one ExpectationFailed (with up to
    MAX_SAMPLE_IDS offending ids), raised after the results were written. A filter check on a missing
    column fails: its rows cannot be identified. ``checks`` counts as GE does: ``element_count`` every row,
    ``unexpected_count`` the failed non-null ones (None, as success, when off or the column is missing).
    """
    frame = df.reset_index(drop=True)
    where = f"the gate of expectation suite {gate.suite}"
    wanted = gx.validate_modes(where, gate.check_names(), modes)
    params = dict(parameters or {})
    plans = []
    for check in gate.rows:
        mode, threshold = wanted.get(check.name, check.mode), None
        if check.param is not None and mode != "off":
            if check.param not in params:
                raise DataError(f"{where}: row check '{check.name}' needs parameter {check.param}; "
                                f"given: {', '.join(sorted(params)) or 'none'}")
            threshold = params[check.param]
            mode = "off" if threshold is None else mode
        plans.append((check, mode, threshold))
    row_names = {c.name for c in gate.rows}
    suite = gx.run_suite(frame, gate.suite, params, {k: v for k, v in wanted.items() if k not in row_names},
                         id_column, results_path, raise_on_fail=False)

    ids = id_columns(frame, id_column)
    summary, warnings, fails = dict(suite.checks), list(suite.warnings), list(suite.fails)
    filtered: list[tuple[str, np.ndarray]] = []
    for check, mode, threshold in plans:
        if mode == "off":
            summary[check.name] = {"mode": "off", "success": None, "unexpected_count": None, "element_count": None}
            continue
        if check.column not in frame.columns:
            summary[check.name] = {"mode": mode, "success": False, "unexpected_count": None, "element_count": None}
            missing = Failure(check.rule(threshold), check.column, [], "column is missing", check.name)
            if mode == "filter":
                missing.detail = "filter check whose rows cannot be identified: column is missing"
            (warnings if mode == "warn" else fails).append(missing)
            continue
        bad = check.unexpected(frame, threshold)
        count = int(bad.sum())
        summary[check.name] = {"mode": mode, "success": count == 0, "unexpected_count": count,
                               "element_count": len(frame)}
        if mode == "filter":
            filtered.append((check.name, bad))
        elif count:
            (warnings if mode == "warn" else fails).append(_row_failure(check, threshold, frame, bad, ids))

    if fails:
        title = f"quality gate '{suite.report.suite}' ({gate.suite})"
        raise ExpectationFailed(gx.fail_message(title, fails, results_path))
    rejected_mask = np.zeros(len(frame), bool)
    for _, bad in filtered:
        rejected_mask |= bad
    reasons = [[] for _ in range(int(rejected_mask.sum()))]
    for name, bad in filtered:  # gate order
        for j in np.flatnonzero(bad[rejected_mask]):
            reasons[j].append(name)
    kept = frame.loc[~rejected_mask].reset_index(drop=True)
    rejected = frame.loc[rejected_mask].reset_index(drop=True).assign(gate_reason=["; ".join(r) for r in reasons])
    return GateResult(kept=kept, rejected=rejected, warnings=warnings, checks=summary, report=suite.report)

