"""Back-translation (source -> pivot -> source) through a pluggable translator.

A translator is anything with `name`, `identity` and `translate(texts, src, tgt)` (the `Translator`
protocol). `identity` is a string written into every lineage record; it changes whenever the output could
change (engine version, the bytes of the language data or weights, decoding settings), so `replay` can
tell "same translator, different output" (a bug) from "different translator" (expected drift).

Two translators:

`ApertiumTranslator` (rule-based, Debian packages `apertium` + `apertium-eng-spa`, language codes "eng",
"spa"): the one that works offline here.
  - Unknown-word marks: apertium marks words it cannot analyse (`*word`), translate (`@word`) or inflect
    (`#word`). They are switched off at the source (the `-n` generator option, what `apertium -u` does), so
    no text-level stripping is needed and a real "#1" or "a@b.com" in the input survives. The record's
    `identity` says `marks=off`.
  - Whitespace: apertium leaves runs of spaces where it drops words ("Qué a menudo   ves"); runs of spaces
    and tabs are collapsed to one and each text is stripped (`space=collapse` in `identity`).
  - Batching: one pipeline process per stage per batch, texts separated by NUL in apertium's null-flush
    mode (`-z`). Null-flush alone is NOT enough for batch == one-by-one: apertium-tagger 3.8 keeps state
    across flushes (when it meets an ambiguity class its model lacks, `find_similar_ambiguity_class`
    overwrites the tagger's open class, which later decides unknown words), so some Rotten Tomatoes
    snippets translated differently in one `apertium -z` batch than alone. So the stages before the
    tagger and after it run once per batch, and the tagger (quick to start) runs once per text; with
    that, a batch gives exactly the bytes of one-by-one runs (tests/test_text_translate.py; a pair
    without a tagger stage runs whole once per batch). Format conversion (`apertium-destxt` /
    `apertium-retxt`) also runs per text. That is far cheaper than a full `apertium` run per text, which
    would start every stage for every text (figures: docs/decisions.md, "Back-translation batches").

`MarianTranslator`: MarianMT folders (one per direction, e.g. Helsinki-NLP/opus-mt-en-es saved with
`save_pretrained`) loaded with transformers' `MarianMTModel` / `MarianTokenizer` from local folders only,
decoded greedily (or with beam search, `num_beams`), never sampled. No MarianMT model is installable
here; the code is tested on a tiny random model built from a `MarianConfig`.

`back_translate(texts, translator, pivot)` returns one record per text, or None where the round trip
gives the source back (no augmentation); `replay(text, record, translator)` re-runs one text and checks
both legs against the record.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Mapping, Protocol, Sequence, runtime_checkable

from augdag import cancel
from augdag.env import torch_threads
from augdag.errors import LineageError, ModelError
from augdag.text.data import check_texts

OP = "back_translate"
APT_HINT = "install the Debian packages: apt-get install apertium apertium-{pair}"
_SPACES = re.compile(r"[ \t]{2,}")


@runtime_checkable
class Translator(Protocol):
    """A batched translator. `translate` returns one string per input, in order; equal inputs with equal
    `identity` must give equal outputs whatever the batch they come in."""

    name: str

    @property
    def identity(self) -> str: ...

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]: ...


def normalize_space(text: str) -> str:
    """Collapse runs of spaces/tabs to one space and strip the ends (line breaks are kept)."""
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.strip().split("\n"))


def _sha256_file(path: Path, h=None) -> str:
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- apertium

class ApertiumTranslator:
    """Apertium through its command-line tools; see the module docstring for marks, spacing and batching.

    pairs: the directions this translator may run (each needs `<datadir>/modes/<src>-<tgt>.mode`);
    datadir: apertium's data folder (default `$APERTIUM_DATADIR`, else /usr/share/apertium).
    """

    name = "apertium"
    TOOLS = ("apertium", "apertium-wblank-mode", "apertium-destxt", "apertium-retxt", "apertium-tagger")

    def __init__(self, pairs: Sequence[str] = ("eng-spa", "spa-eng"), datadir: str | Path | None = None,
                 timeout_s: float = 600.0):
        if isinstance(pairs, str) or not pairs:
            raise ValueError(f"pairs must be a non-empty list like ['eng-spa', 'spa-eng'], got {pairs!r}")
        self.pairs = tuple(pairs)
        self.datadir = Path(datadir or os.environ.get("APERTIUM_DATADIR") or "/usr/share/apertium")
        self.timeout_s = float(timeout_s)
        missing = [t for t in self.TOOLS if shutil.which(t) is None]
        if missing:
            raise ModelError(f"apertium tools not found on PATH: {', '.join(missing)}; "
                             + APT_HINT.format(pair=self.pairs[0]))
        available = sorted(p.stem for p in (self.datadir / "modes").glob("*.mode"))
        for pair in self.pairs:
            if pair not in available:
                a, _, b = pair.partition("-")
                raise ModelError(
                    f"apertium has no translation direction {pair!r} in {self.datadir / 'modes'} "
                    f"(available: {', '.join(available) or 'none'}); install the Debian package "
                    f"apertium-{a}-{b} or apertium-{b}-{a} (apt-get install apertium-{a}-{b})")
        self._env = {**os.environ, "LC_ALL": "C.UTF-8"}
        self._version = self._run(["apertium", "-V"], b"").decode().strip()
        self._pipes = {pair: self._pipeline(pair) for pair in self.pairs}
        self._identity: str | None = None

    # -- setup
    def _run(self, cmd, data: bytes, shell: bool = False) -> bytes:
        args = ["bash", "-c", cmd, "bash", "-n", ""] if shell else cmd  # $1=-n: no unknown marks, $2: tagger opts
        try:
            res = subprocess.run(args, input=data, capture_output=True, env=self._env, timeout=self.timeout_s)
        except subprocess.TimeoutExpired as e:
            raise ModelError(f"apertium step timed out after {self.timeout_s:.0f} s: {cmd}") from e
        if res.returncode != 0:
            raise ModelError(f"apertium step failed ({res.returncode}): {cmd}\n"
                             f"{res.stderr.decode(errors='replace')[-2000:]}")
        return res.stdout

    def _pipeline(self, pair: str) -> tuple[str, str, str]:
        """(stages before the tagger, the tagger, stages after it) of the pair's null-flush pipeline."""
        mode = self.datadir / "modes" / f"{pair}.mode"
        text = self._run(["apertium-wblank-mode", "-z", str(mode)], b"").decode().strip()
        stages = [s.strip() for s in re.split(r"\s\|\s", text)]
        tagger = [i for i, s in enumerate(stages) if shlex.split(s.replace("$1", "").replace("$2", ""))[0]
                  == "apertium-tagger"]
        if not tagger:  # no tagger: nothing known to leak, the whole pipeline runs once per batch
            return " | ".join(stages), "", ""
        if len(tagger) > 1:
            raise ModelError(f"apertium mode {mode} has {len(tagger)} apertium-tagger stages; expected one "
                             f"(pipeline: {text})")
        t = tagger[0]
        return " | ".join(stages[:t]), stages[t], " | ".join(stages[t + 1:])

    @property
    def identity(self) -> str:
        """Engine version + sha256 over each pair's pipeline text and the bytes of every data file it reads."""
        if self._identity is None:
            parts = [self._version.replace(" ", "-"), "marks=off", "space=collapse"]
            for pair in self.pairs:
                h = hashlib.sha256()
                pipe = " | ".join(self._pipes[pair])
                h.update(pipe.encode())
                for tok in shlex.split(pipe.replace("$1", "").replace("$2", "")):
                    if tok.startswith("/") and Path(tok).is_file():
                        h.update(tok.encode())
                        _sha256_file(Path(tok), h)
                parts.append(f"{pair}={h.hexdigest()[:16]}")
            self._identity = "apertium:" + ";".join(parts)
        return self._identity

    # -- translation
    def _batch(self, cmd: str, chunks: list[bytes]) -> list[bytes]:
        if not cmd:
            return list(chunks)
        out = self._run(cmd, b"".join(c + b"\0" for c in chunks), shell=True)
        parts = out.split(b"\0")
        # each stage may add flush NULs at the very end; anything but empties past len(chunks) is an error
        if len(parts) < len(chunks) or any(p.strip() for p in parts[len(chunks):]):
            raise ModelError(f"apertium returned {len(parts)} NUL-separated parts for {len(chunks)} texts "
                             f"(stage: {cmd[:200]})")
        return parts[:len(chunks)]

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        texts = check_texts(texts)
        pair = f"{src}-{tgt}"
        if pair not in self._pipes:
            raise ValueError(f"translation direction {pair!r} is not in this translator's pairs "
                             f"{list(self.pairs)} (language codes are apertium's, e.g. 'eng', 'spa')")
        before, tagger, after = self._pipes[pair]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        out = [""] * len(texts)
        if not todo:
            return out
        deformatted = [self._run(["apertium-destxt"], texts[i].replace("\0", " ").encode()) for i in todo]
        analysed = self._batch(before, deformatted)
        tagged = [self._batch(tagger, [a])[0] for a in analysed] if tagger else analysed  # the tagger leaks state
        generated = self._batch(after, tagged)
        for i, g in zip(todo, generated):
            out[i] = normalize_space(self._run(["apertium-retxt"], g).decode())
        return out


# --------------------------------------------------------------------------------------------- marian

def _weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise ModelError(f"MarianMT folder {folder} has no model.safetensors (or pytorch_model.bin); save the model "
                     f"there with save_pretrained()")


class MarianTranslator:
    """MarianMT models from local folders, one per direction.

    models: {"eng-spa": folder, "spa-eng": folder} (keys "src-tgt" or (src, tgt) tuples; the codes are
    whatever `back_translate` is called with). Each folder holds what `MarianMTModel.save_pretrained` and
    `MarianTokenizer.save_pretrained` write (config.json, model.safetensors, source.spm, target.spm,
    vocab.json). Loading is local only (`local_files_only=True`); .bin weights load through transformers'
    `weights_only=True` torch.load, safetensors are preferred.

    Decoding is deterministic: greedy (num_beams=1) or beam search, no sampling. batch_size texts are
    padded into one forward pass; padding can change float sums and so, rarely, an argmax, so the default
    batch_size=1 makes a text's output independent of its neighbours (the DAG's determinism rule);
    raise it only where that does not matter. threads: torch threads while translating (None: leave as is).
    """

    name = "marian"

    def __init__(self, models: Mapping, num_beams: int = 1, max_new_tokens: int = 256, batch_size: int = 1,
                 threads: int | None = 1, device: str = "cpu"):
        if not models:
            raise ValueError("models must map a direction ('eng-spa') to a MarianMT folder")
        if num_beams < 1 or max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"num_beams, max_new_tokens and batch_size must be >= 1, got {num_beams}, "
                             f"{max_new_tokens}, {batch_size}")
        self.folders: dict[str, Path] = {}
        for key, folder in models.items():
            pair = "-".join(key) if isinstance(key, tuple) else str(key)
            if pair.count("-") != 1:
                raise ValueError(f"direction {key!r} must be 'src-tgt' or (src, tgt)")
            folder = Path(folder).expanduser()
            if not (folder / "config.json").is_file():
                raise ModelError(f"MarianMT folder for {pair} not found or has no config.json: {folder}")
            self.folders[pair] = folder
        self.num_beams, self.max_new_tokens, self.batch_size = int(num_beams), int(max_new_tokens), int(batch_size)
        self.threads, self.device = threads, str(device)
        self._loaded: dict[str, tuple] = {}
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            dirs = ";".join(f"{pair}={_sha256_file(_weights_file(f))[:16]}" for pair, f in sorted(self.folders.items()))
            self._identity = f"marian:beams={self.num_beams};max_new_tokens={self.max_new_tokens};{dirs}"
        return self._identity

    def _load(self, pair: str):
        if pair not in self._loaded:
            from transformers import MarianMTModel, MarianTokenizer

            folder = self.folders[pair]
            _weights_file(folder)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "Recommended: pip install sacremoses" and the like
                    tok = MarianTokenizer.from_pretrained(str(folder), local_files_only=True)
                    model = MarianMTModel.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError) as e:
                raise ModelError(f"cannot load the MarianMT model for {pair} from {folder}: {e}") from e
            model.eval().to(self.device)
            self._loaded[pair] = (tok, model)
        return self._loaded[pair]

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        import torch

        texts = check_texts(texts)
        pair = f"{src}-{tgt}"
        if pair not in self.folders:
            raise ValueError(f"no MarianMT model for direction {pair!r}; have {sorted(self.folders)}")
        tok, model = self._load(pair)
        out = [""] * len(texts)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        with torch_threads(self.threads), torch.inference_mode():
            for s in range(0, len(todo), self.batch_size):
                cancel.check()
                idx = todo[s:s + self.batch_size]
                enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True).to(self.device)
                gen = model.generate(**enc, do_sample=False, num_beams=self.num_beams,
                                     max_new_tokens=self.max_new_tokens)
                for i, g in zip(idx, tok.batch_decode(gen, skip_special_tokens=True)):
                    out[i] = normalize_space(g)
        return out


# --------------------------------------------------------------------------------------------- records

def word_changes(old: str, new: str) -> list[dict]:
    """Which words became which: difflib opcodes over whitespace-split words.

    Each change is {"op": "replace"|"delete"|"insert", "at": index of the first old word, "old": words,
    "new": words} (words joined by single spaces)."""
    a, b = old.split(), new.split()
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            out.append({"op": tag, "at": i1, "old": " ".join(a[i1:i2]), "new": " ".join(b[j1:j2])})
    return out


def back_translate(texts: Sequence[str], translator: Translator, pivot: str = "spa",
                   src: str = "eng") -> list[dict | None]:
    """Round-trip every text src -> pivot -> src (two batched calls).

    Returns, per text, a record {"op", "translator" (identity), "src", "pivot", "intermediate", "output",
    "changes" (word_changes(source, output))}, or None where the output equals the source up to spacing
    (nothing was augmented) or the text is empty."""
    texts = check_texts(texts)
    ident = translator.identity
    forward = translator.translate(texts, src, pivot)
    back = translator.translate(forward, pivot, src)
    if len(forward) != len(texts) or len(back) != len(texts):
        raise ModelError(f"translator {ident} returned {len(forward)}/{len(back)} texts for {len(texts)}")
    records: list[dict | None] = []
    for text, mid, out in zip(texts, forward, back):
        if not out.strip() or normalize_space(out) == normalize_space(text):
            records.append(None)
            continue
        records.append({"op": OP, "translator": ident, "src": src, "pivot": pivot, "intermediate": mid,
                        "output": out, "changes": word_changes(text, out)})
    return records


def replay(text: str, record: Mapping, translator: Translator) -> str:
    """Re-run one text's round trip and check it against its record; returns the output.

    Raises LineageError when the record is not a back-translation record, was made by another translator
    (identity differs: engine, data or settings changed), or a leg gives different text."""
    if not isinstance(record, Mapping) or record.get("op") != OP:
        raise LineageError(f"not a {OP} record: op={record.get('op') if isinstance(record, Mapping) else record!r}")
    missing = [k for k in ("translator", "src", "pivot", "intermediate", "output") if k not in record]
    if missing:
        raise LineageError(f"{OP} record lacks {', '.join(missing)}")
    if record["translator"] != translator.identity:
        raise LineageError(f"{OP} record was made by translator {record['translator']!r}; this translator is "
                           f"{translator.identity!r}, so its output may differ")
    mid = translator.translate([text], record["src"], record["pivot"])[0]
    if mid != record["intermediate"]:
        raise LineageError(f"{OP} replay: {record['src']}->{record['pivot']} gave {mid!r}, "
                           f"record has {record['intermediate']!r}")
    out = translator.translate([mid], record["pivot"], record["src"])[0]
    if out != record["output"]:
        raise LineageError(f"{OP} replay: {record['pivot']}->{record['src']} gave {out!r}, "
                           f"record has {record['output']!r}")
    return out
