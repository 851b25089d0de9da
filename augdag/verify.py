"""`augdag verify`: are the outputs what dvc.lock says, and is every stored sample the one its hash records?

Two checks. (1) Stored samples: every row of every stage that stores samples is read back and hashed (images:
`content_hash`, texts: `text_hash`) against its manifest's `content_hash`. (2) Recompute: the stages run again
in a scratch copy of the project through `dvc repro --force` (the upstream outputs hard-linked in, so nothing
here is touched), and each output's md5 is compared with the committed `dvc.lock`; for a differing folder the
differing files are named, and for a manifest the first differing sample and column.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import yaml

from augdag.errors import AugdagError
from augdag.layout import cycle_dir, out_dir

# the stages whose folders hold samples
STORED = ("ingest", "traditional", "mix", "generative", "crossdomain", "merge")
PROJECT = ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore", "tasks", "augdag", "expectations", "flows")
_SHOWN = 5  # mismatching samples listed per stage


def stored_samples(root: Path, stages: Iterable[str] = STORED) -> dict[str, dict]:
    """Per stage: rows checked and the first mismatching ones ({"sample_id", "where", "recorded", "stored"})."""
    from augdag.storage import MANIFEST, StageData, content_hash, read_table, table_chunks, text_hash

    out: dict[str, dict] = {}
    stages = list(stages)
    folders = [(s, out_dir(root, s)) for s in stages]
    if "crossdomain" in stages:  # the translations' cycle reconstructions have a manifest of their own
        folders.append(("crossdomain/cycle", cycle_dir(root)))
    for stage, folder in folders:
        if not (folder / MANIFEST).exists():
            continue
        data = StageData(folder, manifest=False)
        checked, bad, count = 0, [], 0
        for chunk in table_chunks(read_table(folder / MANIFEST), 4096):
            texts = chunk["text"] if "text" in chunk else None
            for i, r in enumerate(chunk.to_dict("records")):
                checked += 1
                if texts is not None and isinstance(r.get("text"), str):
                    stored, where = text_hash(r["text"]), "manifest text"
                else:
                    stored, where = content_hash(data.image(r)), f"shard {r['shard']} index {r['index']}"
                if stored != r["content_hash"]:
                    count += 1
                    if len(bad) < _SHOWN:
                        bad.append({"sample_id": r["sample_id"], "where": where, "recorded": r["content_hash"],
                                    "stored": stored})
        out[stage] = {"checked": checked, "mismatches": count, "first": bad}
    return out


def workspace(root: Path) -> dict[str, list[str]]:
    """Per stage, its outputs (and code or params) here that differ from dvc.lock, as `dvc status` sees them."""
    import json

    res = subprocess.run([_dvc(), "status", "dvc.yaml", "--json"], cwd=root, env=_env(), capture_output=True,
                         text=True)
    if res.returncode:
        raise AugdagError(f"verify: dvc status failed: {res.stderr[-1000:]}")
    out: dict[str, list[str]] = {}
    for stage, entries in (json.loads(res.stdout or "{}")).items():
        for entry in entries:
            if isinstance(entry, dict):
                for kind, paths in entry.items():
                    out.setdefault(stage, []).extend(f"{kind.removeprefix('changed ')} {p}: {v}"
                                                     for p, v in (paths.items() if isinstance(paths, dict) else []))
    return out


def _outs(lock: dict, stage: str) -> dict[str, str]:
    return {o["path"]: o["md5"] for o in lock["stages"][stage].get("outs", [])}


def _dvc() -> str:
    return str(Path(sys.executable).parent / "dvc")


def _env() -> dict:
    from augdag.env import OFFLINE

    return {**os.environ, **OFFLINE, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _link_tree(src: Path, dst: Path) -> None:
    try:
        shutil.copytree(src, dst, copy_function=os.link)
    except OSError:  # another file system: copies
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


def _first_manifest_difference(a: Path, b: Path) -> str | None:
    import pandas as pd

    x, y = pd.read_parquet(a), pd.read_parquet(b)
    if list(x.columns) != list(y.columns):
        return f"columns differ: {list(x.columns)} vs {list(y.columns)}"
    if len(x) != len(y):
        return f"{len(x)} rows vs {len(y)}"
    for i in range(len(x)):
        for c in x.columns:
            if str(x[c].iloc[i]) != str(y[c].iloc[i]):
                return (f"row {i} (sample {x['sample_id'].iloc[i]!r}), column {c!r}: "
                        f"{x[c].iloc[i]!r} vs {y[c].iloc[i]!r}")
    return None


def _files(folder: Path) -> dict[str, str]:
    """relative path -> md5 of each file (digests, not bytes: a large output's shards need not fit in memory)."""
    import hashlib

    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                out[p.relative_to(folder).as_posix()] = hashlib.file_digest(f, "md5").hexdigest()
    return out


def recompute(root: Path, stages: list[str] | None = None, keep: Path | None = None) -> dict[str, dict]:
    """Run `stages` (None: all) again in a scratch copy and compare their outputs with dvc.lock. Per stage:
    {"same": bool, "outs": {path: {"locked", "now", "detail"}}} for the outputs that differ."""
    from augdag.tasks import STAGES

    root = Path(root)
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    todo = list(STAGES) if not stages else [s for s in STAGES if s in stages]
    unknown = sorted(set(stages or []) - set(STAGES))
    if unknown:
        raise AugdagError(f"verify: unknown stage(s) {unknown}; stages: {', '.join(STAGES)}")
    scratch = Path(tempfile.mkdtemp(prefix="augdag-verify-", dir=keep))
    try:
        for name in PROJECT:
            src = root / name
            if src.is_dir():
                shutil.copytree(src, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy2(src, scratch / name)
        if stages:  # the upstream outputs as they are here, linked (a stage replaces its folder, never edits it)
            (scratch / "data").mkdir()
            for d in (root / "data").iterdir():
                if d.name != "validation":
                    (_link_tree(d, scratch / "data" / d.name) if d.is_dir() else os.link(d, scratch / "data" / d.name))
        env = _env()
        for cmd in ([_dvc(), "init", "--no-scm", "-q"], [_dvc(), "config", "core.analytics", "false"],
                    [_dvc(), "config", "cache.type", "copy"]):  # copy: the linked upstream files stay untouched
            subprocess.run(cmd, cwd=scratch, env=env, check=True, capture_output=True)
        runs = [[_dvc(), "repro", "--force", "--single-item", name] for name in todo] if stages else \
            [[_dvc(), "repro", "--force"]]
        for cmd in runs:
            res = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True)
            if res.returncode:
                raise AugdagError(f"verify: {' '.join(cmd[1:])} failed in the scratch copy:\n{res.stderr[-2000:]}")
        now = yaml.safe_load((scratch / "dvc.lock").read_text())
        report: dict[str, dict] = {}
        for name in todo:
            locked, fresh = _outs(lock, name), _outs(now, name)
            diffs = {}
            for path, md5 in locked.items():
                if fresh.get(path) == md5:
                    continue
                detail = None
                a, b = root / path, scratch / path
                if a.is_dir() and b.is_dir():
                    fa, fb = _files(a), _files(b)
                    names = sorted(n for n in set(fa) | set(fb) if fa.get(n) != fb.get(n))
                    detail = f"files differ: {', '.join(names[:8])}" + (" …" if len(names) > 8 else "")
                    for n in names:
                        if n.endswith(".parquet") and n in fa and n in fb:
                            first = _first_manifest_difference(a / n, b / n)
                            detail += f"; {n}: {first}" if first else ""
                            break
                elif a.suffix == ".parquet" and a.exists() and b.exists():
                    detail = _first_manifest_difference(a, b)
                diffs[path] = {"locked": md5, "now": fresh.get(path), "detail": detail}
            report[name] = {"same": not diffs, "outs": diffs}
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
