"""The report stage on texts (params `modality: text`, settings in `text.report`): templates/text.html.j2 on
the image report's base.html.j2, its stylesheet static/text.css."""

from __future__ import annotations

import html
import json
from pathlib import Path

from augdag.layout import classes
from augdag.params import TEXT_BRANCHES as BRANCHES
from augdag.params import Params
from augdag.storage import atomic_dir, load_json, read_manifest, try_read_json, write_json, write_text
from augdag.tasks import is_text_run, out_dir
from augdag.tasks._text import _texts_by_id

from .templating import render as render_template
from .templating import static


def _md(text: str) -> str:
    """Text in a markdown table cell: one line, the characters that start a column, emphasis or strike escaped."""
    return " ".join(text.split()).replace("|", "\\|").replace("*", "\\*").replace("~", "\\~")


def marked(source: str, variant: str, style: str = "html") -> tuple[str, str]:
    """(source, variant) with the changed words marked: html, <del> in the source and <ins> in the variant
    (escaped); md (the Prefect UI's markdown), ~~struck~~ and **bold**."""
    import difflib

    esc, dele, ins = (html.escape, "<del>{}</del>", "<ins>{}</ins>") if style == "html" else (_md, "~~{}~~", "**{}**")
    a, b = source.split(), variant.split()
    left, right = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        old, new = esc(" ".join(a[i1:i2])), esc(" ".join(b[j1:j2]))
        if tag == "equal":
            left.append(old)
            right.append(new)
        else:
            if old:
                left.append(dele.format(old))
            if new:
                right.append(ins.format(new))
    return " ".join(left), " ".join(right)


def samples_markdown(root: Path, branch: str, n: int = 5) -> str | None:
    """A markdown table of a branch's first n variants beside their sources (the Prefect UI's artifact)."""
    path = out_dir(root, branch) / "manifest.parquet"
    if not path.exists() or not is_text_run(root):
        return None
    m = read_manifest(out_dir(root, branch)).head(n)
    if not len(m):
        return None
    texts = _texts_by_id(root)
    lines = [f"### {branch}: source beside variant (~~removed~~, **new**)", "", "| sample | how | source | variant |",
             "|---|---|---|---|"]
    for _, r in m.iterrows():
        parents = list(r.parent_ids)
        if isinstance(r.text, str):
            src, var = marked(texts[parents[0]], r.text, "md")
        else:
            src, var = _md(texts[parents[0]]), "*mixed with* " + _md(texts[parents[1]])
        lines.append(f"| `{r.sample_id}` | {_how(branch, json.loads(r.op_params or '{}'))} | {src} | {var} |")
    return "\n".join(lines) + "\n"


def _how(branch: str, op_params: dict) -> str:
    if branch == "traditional":
        ops_ = [o["op"] for o in op_params.get("ops") or []]
        if op_params.get("syntax"):
            ops_.append(f"syntax:{op_params['syntax']['rule']}")
        return ", ".join(ops_) or "no op drawn"
    if branch == "generative":
        if op_params.get("op") == "back_translate":
            return f"back-translation via {op_params.get('pivot')} ({op_params.get('translator', '')[:40]})"
        return f"paraphrase ({op_params.get('model', '')})"
    return f"embedding Mixup, lam {op_params.get('lam', 0):.3f}"


def sample_rows(root: Path, n: int = 5) -> list[dict]:
    """Up to n kept and n rejected examples per branch (quality manifests): source, variant, changes marked."""
    texts = _texts_by_id(root)
    out = []
    for name in ("manifest.parquet", "rejected.parquet"):
        path = out_dir(root, "quality") / name
        if not path.exists():
            continue
        m = read_manifest(out_dir(root, "quality"), name)
        for branch, rows in m.groupby("branch", sort=False):
            for _, r in rows.head(n).iterrows():
                op = json.loads(r.op_params or "{}")
                parents = list(r.parent_ids)
                if isinstance(r.text, str):
                    src, var = marked(texts[parents[0]], r.text)
                else:
                    src = html.escape(texts[parents[0]])
                    var = f"<i>mixed with</i> {html.escape(texts[parents[1]])}"
                out.append({"branch": branch, "sample_id": r.sample_id, "how": _how(branch, op), "source": src,
                            "variant": var, "gate": r.gate, "reason": r.gate_reason or "",
                            "scores": json.loads(r.scores or "{}")})
    return out


def dialogue_rows(root: Path, n: int = 3) -> dict | None:
    """The simulated dialogues' figures and the first n test dialogues, each turn with the model's prediction."""
    import csv

    summary = try_read_json(out_dir(root, "dialogue") / "summary.json") or {}
    if not summary.get("enabled"):
        return None
    names = classes(root)
    m = read_manifest(out_dir(root, "dialogue"))
    test = m[m.split == "test"]
    with open(out_dir(root, "evaluate") / "predictions.csv", newline="", encoding="utf-8") as f:
        predicted = {r["sample_id"]: r["predicted"] for r in csv.DictReader(f)}
    shown: dict[str, list] = {}
    for r in test.itertuples():
        op = json.loads(r.op_params)
        if op["dialogue"] not in shown and len(shown) == n:
            break
        shown.setdefault(op["dialogue"], []).append(
            {"turn": op["turn"], "intent": names[r.label], "p": op["p"], "text": r.text,
             "predicted": predicted.get(r.sample_id, ""), "ok": predicted.get(r.sample_id) == names[r.label]})
    ev = (try_read_json(out_dir(root, "evaluate") / "summary.json") or {}).get("dialogue") or {}
    splits = summary.get("splits", {})
    return {"splits": {k: splits[k] for k in ("train", "val", "test") if k in splits},
            "context": summary.get("context"), "evaluate": ev,
            "dialogues": [{"id": k, "turns": v} for k, v in shown.items()]}


def report(p: Params, root: Path) -> dict:
    names = classes(root)
    ingest_s = load_json(out_dir(root, "ingest") / "summary.json", "the ingest summary")
    quality_s = load_json(out_dir(root, "quality") / "summary.json", "the quality summary")
    merge_s = load_json(out_dir(root, "merge") / "summary.json", "the merge summary")
    ft_s = load_json(out_dir(root, "finetune") / "summary.json", "the finetune summary")
    metrics = load_json(out_dir(root, "evaluate") / "metrics.json", "the evaluate metrics")
    confusion = load_json(out_dir(root, "evaluate") / "confusion.json", "the confusion matrix")
    branches = {b: try_read_json(out_dir(root, b) / "summary.json") or {} for b in BRANCHES}
    samples = sample_rows(root, max(1, p.report.grid_samples // 4))
    page = render_template(
        "text.html.j2", css=static("text.css"), seed=p.seed, classes=names,
        ingest={k: ingest_s.get(k) for k in ("train", "val", "test")},
        test={"accuracy": f"{metrics['accuracy']:.4f}", "macro_f1": f"{metrics['macro_f1']:.4f}",
              "n": metrics["n_test"]},
        # the header escapes each class name twice (here and in the template), as this page always has: "R&B" shows
        # as "R&amp;B"; the rows show it once
        confusion={"header": [html.escape(c) for c in names],
                   "rows": [(c, [str(v) for v in row]) for c, row in zip(names, confusion["matrix"])]},
        branches=[{"branch": b, "made": branches[b].get("samples", 0), "gate_in": quality_s[b]["in"],
                   "kept": quality_s[b]["kept"], "rejected": quality_s[b]["rejected"],
                   "means": json.dumps(quality_s[b].get("mean_scores", {}))} for b in BRANCHES],
        merged=[{"source": s, "samples": v["samples"], "mass": f"{v['mass']:.4f}"}
                for s, v in merge_s.items() if s != "checks"],
        finetune={"model": ft_s["model"], "steps": ft_s["steps"], "samples": ft_s["samples"],
                  "pairs": ft_s.get("pairs", 0), "val_accuracy": ft_s.get("val_accuracy", "n/a")},
        samples=samples, dialogue=dialogue_rows(root),
        devices=[(s, d["device"]) for s, d in (("generative", branches["generative"]), ("quality", quality_s),
                                                ("finetune", ft_s),
                                                ("evaluate", try_read_json(out_dir(root, "evaluate") / "summary.json")
                                                 or {}))
                 if d.get("device")])
    with atomic_dir(out_dir(root, "report")) as tmp:
        write_text(tmp / "report.html", str(page))
        write_json(tmp / "samples.json", samples)
        summary = {"modality": "text", "accuracy": metrics["accuracy"], "samples_shown": len(samples)}
        write_json(tmp / "summary.json", summary)
    return summary


def run(p: Params, root: Path, **_) -> dict:
    return report(p, Path(root))
