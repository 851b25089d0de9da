"""Each stage's status (from its output folder) and the time a run recorded for it."""

from __future__ import annotations

from pathlib import Path

from augdag.storage import try_read_json
from augdag.tasks import out_dir

TIMINGS = ("validation", "timings")  # data/validation/timings/<stage>.json: {"seconds", "ok", "error"}, if written

STATUS_CLASS = {"ran": "st-ran", "off": "st-off", "missing": "st-missing", "failed or incomplete": "st-failed",
                "failed": "st-failed", "this page": "st-page"}


def _leftovers(root: Path, stage: str) -> list[str]:
    """Hidden siblings atomic_dir leaves only when a write was interrupted (.NAME.tmp-PID, .NAME.old-PID)."""
    parent = out_dir(root, stage).parent
    if not parent.is_dir():
        return []
    return sorted(p.name for pat in (f".{stage}.tmp-*", f".{stage}.old-*") for p in parent.glob(pat))


def timing(root: Path, stage: str, summary) -> tuple[float | None, str]:
    """Seconds a stage took, if any run recorded it: a `timings` mapping in its summary.json, else
    data/validation/timings/<stage>.json. (None, "") when neither exists."""
    t = summary.get("timings") if isinstance(summary, dict) else None
    if isinstance(t, dict):
        nums = {k: float(v) for k, v in t.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        total = nums.get("total", nums.get("seconds", sum(nums.values()) if nums else None))
        return total, ", ".join(f"{k} {secs(v)}" for k, v in nums.items()) if len(nums) > 1 else ""
    rec = try_read_json(Path(root, "data", *TIMINGS, f"{stage}.json"))
    if isinstance(rec, dict) and isinstance(rec.get("seconds"), (int, float)):
        return float(rec["seconds"]), ""
    return None, ""


def secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"


def stage_status(root: Path, stage: str) -> tuple[str, str]:
    """(status, note): ran | off | missing | failed or incomplete | failed | this page."""
    if stage == "report":
        return "this page", ""
    folder = out_dir(root, stage)
    left = _leftovers(root, stage)
    rec = try_read_json(Path(root, "data", *TIMINGS, f"{stage}.json"))
    if (folder / "summary.json").exists():
        if left:
            return "failed or incomplete", (f"an interrupted write left {left[0]}; what is shown is the last complete "
                                            "output")
        if isinstance(rec, dict) and rec.get("ok") is False:
            return "failed", (f"the last run failed ({rec.get('error') or 'no message'}); what is shown is an earlier "
                              "output")
        summary = try_read_json(folder / "summary.json")
        if summary is None:
            return "failed or incomplete", "its summary.json cannot be read"
        if isinstance(summary, dict) and summary.get("enabled") is False:
            return "off", summary.get("note") or "branch disabled in params (strategy)"
        return "ran", ""
    failed = isinstance(rec, dict) and rec.get("ok") is False
    if folder.exists() or left:
        why = f"an interrupted write left {left[0]}" if left else "its folder has no summary.json"
        return "failed or incomplete", f"{why}: the stage failed or was interrupted" + (
            f" ({rec.get('error') or 'no message'})" if failed else "") + "; rerun it"
    if failed:  # dvc repro removes a stage's outputs before running it
        return "failed", f"the last run failed ({rec.get('error') or 'no message'}); no output"
    return "missing", f"run the {stage} stage"
