"""The README is a front door: short, its links resolve, and every `augdag` / `dvc` command it shows parses.

`readme_commands()` is the list of those commands exactly as a user would type them (from the README's
```bash blocks, comments dropped); a slow test may run the read-only ones after a pipeline run."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from helpers import BIN, REPO

README = REPO / "README.md"
MAX_LINES = 260
PROGRAMS = ("augdag", "dvc")
# dvc commands whose first word is a group of subcommands (`dvc exp run`, `dvc metrics show`, ...)
DVC_GROUPS = {"artifacts", "cache", "data", "exp", "experiments", "metrics", "params", "plots", "queue", "remote",
              "stage"}


def bash_blocks(text: str | None = None) -> list[str]:
    """The contents of the ```bash fenced blocks of `text` (default: the README), in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    return re.findall(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)


def _segments(line: str) -> list[str]:
    """The simple commands of one shell line, as written: split at `;`, `&&`, `||`, `|` and `&` outside
    quotes, a comment (`#` starting a word outside quotes) dropped."""
    segs, cur, quote, i = [], [], None, 0
    while i < len(line):
        c = line[i]
        if quote:
            cur.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(line):
                cur.append(line[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == "\\" and i + 1 < len(line):
            cur += [c, line[i + 1]]
            i += 1
        elif c == "#" and (not cur or cur[-1].isspace()):
            break
        elif line.startswith(("&&", "||"), i) or c in ";|&":
            segs.append("".join(cur))
            cur = []
            i += 1 if line.startswith(("&&", "||"), i) else 0
        else:
            cur.append(c)
        i += 1
    segs.append("".join(cur))
    return [seg.strip() for seg in segs if seg.strip()]


def _shell_commands(block: str) -> list[tuple[str, list[str]]]:
    """Each simple command of a bash block: (its text as written, its words); `\\` continuations joined."""
    return [(seg, shlex.split(seg)) for line in re.sub(r"[ \t]*\\\n[ \t]*", " ", block).splitlines()
            for seg in _segments(line)]


def _program(words: list[str]) -> str:
    return Path(words[0]).name


def readme_commands(text: str | None = None) -> list[str]:
    """Every `augdag ...` and `dvc ...` command in the README's bash blocks, in order, each as the shell
    text shown (its comment dropped), so it runs as shown from the repo root with `shell=True`."""
    return [seg for block in bash_blocks(text) for seg, words in _shell_commands(block)
            if _program(words) in PROGRAMS]


def _subcommand(words: list[str]) -> tuple[list[str], list[str]]:
    """(the subcommand path, the remaining words) of a parsed augdag or dvc command."""
    rest = words[1:]
    globals_ = []
    if _program(words) == "augdag":  # global options before the subcommand: -C ROOT / --root ROOT
        while rest and rest[0].startswith("-"):
            globals_.append(rest.pop(0))
            if globals_[-1] in ("-C", "--root") and rest:
                rest.pop(0)
        assert rest, f"no subcommand in {shlex.join(words)!r}"
        return [rest[0]], globals_ + rest[1:]
    assert rest, f"no subcommand in {shlex.join(words)!r}"
    if rest[0] in DVC_GROUPS and len(rest) > 1 and not rest[1].startswith("-"):
        return rest[:2], rest[2:]
    return rest[:1], rest[1:]


def _flags(words: list[str]) -> list[str]:
    """The options a command uses, without their `=value`; negative numbers are values, not options."""
    return [w.split("=", 1)[0] for w in words if w.startswith("-") and w != "-" and not re.fullmatch(r"-\d.*", w)]


@functools.cache
def _help(program: str, *path: str) -> str:
    exe = BIN / program
    res = subprocess.run([str(exe), *path, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"`{program} {' '.join(path)} --help` failed ({res.returncode}):\n{res.stderr[-2000:]}"
    return res.stdout


def _mentions(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def _markdown_links(text: str) -> list[str]:
    return [m.split()[0] for m in re.findall(r"\]\(([^)\s]+(?:\s+\"[^\"]*\")?)\)", text)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


# --- the README's size and links ----------------------------------------------------------------------------

def test_readme_is_a_short_front_door():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; keep it at most {MAX_LINES} (topics go to docs/*.md)"


def test_every_docs_and_bench_page_the_readme_names_exists():
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w/.-])((?:docs|bench)/[\w./-]+\.(?:md|png))", text))
    named |= {link.split("#")[0] for link in _markdown_links(text)
              if re.match(r"(?:docs|bench)/", link)}
    assert {"bench/RESULTS.md", "docs/quality-gate.md", "docs/determinism.md", "docs/faults.md", "docs/text.md",
            "docs/dask-and-remotes.md", "docs/decisions.md"} <= named
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert missing == [], f"README.md names files that do not exist: {missing}"


@pytest.mark.parametrize("page", ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
                                  "bench/RESULTS.md", "bench/README.md"])
def test_relative_links_and_anchors_resolve(page):
    """Every relative link of the README, the docs pages and bench's pages points at a file that exists, and
    an #anchor at a heading of that file."""
    src = REPO / page
    if not src.is_file():
        pytest.skip(f"{page} does not exist")
    bad = []
    for link in _markdown_links(src.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        dest = (src.parent / target).resolve() if target else src
        if not dest.exists():
            bad.append(f"{link} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{link} (no heading with that anchor)")
    assert bad == [], f"{page}: broken links: {bad}"


# --- the commands it shows ------------------------------------------------------------------------------------

def test_readme_commands_are_extracted():
    cmds = readme_commands()
    joined = "\n".join(cmds)
    for expected in ("augdag lineage", "augdag replay", "augdag compare", "augdag server", "augdag run --dataset",
                     "augdag run --set", "dvc repro", "dvc push"):
        assert expected in joined, f"no `{expected}` among the README's commands:\n{joined}"
    assert all(c.split()[0].split("/")[-1] in PROGRAMS for c in cmds)


def test_extraction_handles_comments_continuations_and_separators():
    text = ("```bash\n"
            ".venv/bin/augdag lineage 'a~trad0'   # a comment with --fake-flag\n"
            ".venv/bin/dvc metrics show; .venv/bin/dvc dag && echo done\n"
            ".venv/bin/augdag run --set a=1 \\\n  --set b=2\n"
            ".venv/bin/augdag run --dataset ~/my_images --set 'x=a # b'\n"
            "make demo\n"
            "```\n"
            "```\nnot bash: .venv/bin/augdag nothing\n```\n")
    assert readme_commands(text) == [".venv/bin/augdag lineage 'a~trad0'", ".venv/bin/dvc metrics show",
                                     ".venv/bin/dvc dag", ".venv/bin/augdag run --set a=1 --set b=2",
                                     ".venv/bin/augdag run --dataset ~/my_images --set 'x=a # b'"]


def test_every_command_runs_as_shown_from_the_repo_root():
    """`augdag` and `dvc` are not on PATH after `make demo`: the README calls them through .venv/bin/."""
    bare = [c for c in readme_commands() if not c.startswith(".venv/bin/")]
    assert bare == [], f"commands that do not start with .venv/bin/: {bare}"


@pytest.mark.parametrize("program", PROGRAMS)
def test_commands_use_real_subcommands_and_flags(program):
    top = _help(program)
    problems = []
    for cmd in readme_commands():
        words = shlex.split(cmd)
        if _program(words) != program:
            continue
        path, rest = _subcommand(words)
        if program == "augdag" and not re.search(rf"[{{,]{re.escape(path[0])}[,}}]", top):
            problems.append(f"{cmd}: `{path[0]}` is not an augdag subcommand")
            continue
        # augdag's global options (-C) are in its top-level help
        text = _help(program, *path) + (top if program == "augdag" else "")
        problems += [f"{cmd}: {f} is not in `{program} {' '.join(path)} --help`" for f in _flags(rest)
                     if not _mentions(text, f)]
    assert problems == [], "\n".join(problems)


def test_make_targets_shown_exist():
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", (REPO / "Makefile").read_text(), flags=re.M))
    shown = [words[1] for block in bash_blocks() for _, words in _shell_commands(block)
             if words[0] == "make" and len(words) > 1]
    assert {"demo", "test"} <= set(shown)
    missing = sorted(set(shown) - targets)
    assert missing == [], f"README shows make targets the Makefile lacks: {missing}"
