"""dvc.yaml against the DAG declared in augdag.tasks, and every stage's code deps against what its code imports.

A file a stage imports, directly or through other project modules (function-level imports included), must be a
dep of that stage in dvc.yaml: else a change to it leaves the stage 'up to date' while a rerun gives other bytes.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from augdag import tasks
from helpers import REPO

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
ROOTS = {"augdag.tasks": REPO / "tasks", "augdag.flows": REPO / "flows", "augdag": REPO / "augdag"}
SUITE = re.compile(r'EXPECTATIONS\s*/\s*"([^"]+\.json)"')


def module_file(name: str) -> Path | None:
    """The project file of module `name` (a package's __init__.py), or None if it is not one of ours."""
    for prefix, base in ROOTS.items():  # longest prefixes first
        if name == prefix or name.startswith(prefix + "."):
            path = base.joinpath(*name[len(prefix):].strip(".").split(".")) if name != prefix else base
            if path.with_suffix(".py").is_file():
                return path.with_suffix(".py")
            if (path / "__init__.py").is_file():
                return path / "__init__.py"
            return None
    return None


def module_name(path: Path) -> str:
    for prefix, base in ROOTS.items():
        if path.is_relative_to(base):
            parts = list(path.relative_to(base).with_suffix("").parts)
            return ".".join([prefix, *[p for p in parts if p != "__init__"]]).rstrip(".")
    raise AssertionError(f"{path} is not a project module")


def imported_files(path: Path) -> set[Path]:
    """The project files `path` imports, at any level of its code, with the packages they sit in."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            f = module_file(".".join(parts[:i]))
            if f is not None:
                out.add(f)
    return out


def closure(start: list[Path]) -> set[Path]:
    seen, todo = set(), list(start)
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo += imported_files(f) - seen
    return seen


def stage_files(name: str) -> list[Path]:
    package = REPO / "tasks" / name
    return sorted(package.rglob("*.py")) if package.is_dir() else [REPO / "tasks" / f"{name}.py"]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_dvc_yaml_declares_the_dags_stages_in_order_with_their_commands():
    assert list(DVC) == tasks.STAGES
    for name, stage in DVC.items():
        assert stage["cmd"].split()[:3] == ["augdag", "stage", name], name


def test_every_stage_reads_its_upstream_outputs_and_only_those_of_its_ancestors():
    outs = {name: [o for o in s.get("outs", []) + s.get("metrics", []) if isinstance(o, str)]
            for name, s in DVC.items()}

    def ancestors(name):
        found = set()
        for up in tasks.UPSTREAM[name]:
            found |= {up} | ancestors(up)
        return found

    for name, stage in DVC.items():
        data = [d for d in stage["deps"] if d.startswith("data/")]
        producer = {d: [s for s, o in outs.items() if any(covered(d, [x]) or covered(x, [d]) for x in o)] for d in data}
        for d, by in producer.items():
            assert by and set(by) <= ancestors(name), f"{name} depends on {d}, made by {by}: not an ancestor"
        for up in tasks.UPSTREAM[name]:
            assert any(up in by for by in producer.values()), f"{name} reads nothing of its upstream {up}"


def test_a_stage_is_one_package_with_image_and_text_code():
    for stage in tasks.DAG:
        code = tasks.module(stage.name)
        assert callable(code.run), stage.name
        if stage.text:
            assert callable(tasks.module(stage.name, "text").run), stage.name
        if stage.samples:
            assert callable(code.replay) and callable(tasks.module(stage.name, "text").replay), stage.name


@pytest.mark.parametrize("name", tasks.STAGES)
def test_every_file_a_stage_imports_is_one_of_its_dvc_deps(name):
    deps = DVC[name]["deps"]
    files = closure(stage_files(name))
    missing = sorted(str(f.relative_to(REPO)) for f in files if not covered(str(f.relative_to(REPO)), deps))
    assert not missing, f"dvc.yaml: stage {name} imports these files but does not depend on them: {missing}"
    suites = sorted({m for f in files for m in SUITE.findall(f.read_text())})
    assert all((REPO / "expectations" / s).is_file() for s in suites)
    absent = [s for s in suites if not covered(f"expectations/{s}", deps)]
    assert not absent, f"dvc.yaml: stage {name} reads these suites but does not depend on them: {absent}"


def test_the_import_walk_finds_function_level_and_package_imports(tmp_path):
    """The walk itself: a lazy import inside a function counts, and so do the packages on the way."""
    found = {str(f.relative_to(REPO)) for f in closure([REPO / "tasks" / "generative" / "__init__.py"])}
    assert "augdag/diffusion.py" in found  # imported inside replay() only
    assert "augdag/__init__.py" in found and "tasks/__init__.py" in found
    assert not any(f.startswith("tests/") for f in found)


def test_a_text_stage_without_the_text_extra_says_what_to_install(monkeypatch):
    import importlib.util

    from augdag.errors import AugdagError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "spacy" else real(name, *a))
    with pytest.raises(AugdagError, match=r"spacy is not installed: pip install 'augdag\[text\]'"):
        tasks.module("traditional", "text")
    assert tasks.module("strategy", "text").__name__ == "augdag.tasks.strategy"  # strategy serves both
    assert tasks.module("traditional").__name__ == "augdag.tasks.traditional"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "librosa" else real(name, *a))
    with pytest.raises(AugdagError, match=r"librosa is not installed: pip install 'augdag\[audio\]'"):
        tasks.module("ingest", "audio")
    assert tasks.module("mix", "audio").__name__ == "augdag.tasks.mix"  # audio mixes spectrograms as images


def test_audio_runs_its_own_code_where_a_stage_has_it_and_the_image_code_elsewhere():
    own = {name for name in tasks.STAGES if tasks.module(name, "audio").__name__.endswith(".audio")}
    assert own == {"ingest", "traditional", "quality", "report"}
    for name in own:
        assert (REPO / "tasks" / name / "audio.py").is_file()


@pytest.mark.parametrize("pipeline, flow, last", [("compare", "compare", "evaluate"), ("tune", "tune", "finetune")])
def test_the_comparison_and_search_pipelines_depend_on_all_the_code_their_runs_import(pipeline, flow, last):
    """compare/dvc.yaml (every stage but report) and tune/dvc.yaml (ingest..finetune) run the stages through their
    flows: the same rule, from their folders."""
    stage = yaml.safe_load((REPO / pipeline / "dvc.yaml").read_text())["stages"][pipeline]
    deps = [d.removeprefix("../") for d in stage["deps"]]
    start = [REPO / "flows" / f"{flow}.py", REPO / "augdag" / f"{flow}.py"]
    start += [f for name in tasks.STAGES[:tasks.STAGES.index(last) + 1] for f in stage_files(name)]
    files = closure(start)
    missing = sorted(str(f.relative_to(REPO)) for f in files if not covered(str(f.relative_to(REPO)), deps))
    assert not missing, f"{pipeline}/dvc.yaml: its runs import these files but it does not depend on them: {missing}"


def test_the_committed_lock_matches_the_code_and_params():
    """dvc.lock records the md5 of every code dep and the value of every param: a change to a stage's code or
    params without a run (augdag run, dvc repro) and a commit of the lock fails here, not on a user's clone."""
    from helpers import run

    status = json.loads(run(["dvc", "status", "dvc.yaml", "--json"], REPO).stdout or "{}")
    stale = {}
    for stage, entries in status.items():
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            deps = {k: v for k, v in entry.get("changed deps", {}).items() if not k.startswith("data/")}
            if deps:
                stale[stage] = deps
    assert not stale, f"dvc.lock is stale (run augdag run and commit dvc.lock): {stale}"
