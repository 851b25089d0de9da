"""Pretrained feature space: embeddings, a Fréchet distance in it, and a reference classifier.

Inception weights (FID's usual extractor) do not install here, so the pretrained EfficientNet-Lite0
backbone serves: its pooled 1280-d features, or (``depth``) the pooled output of one of its seven block
stages. The reference classifier is a linear probe on such features, trained on the real train split; it
judges whether a sample still looks like its label.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from augdag.models import build_model, preprocess

STAGE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)  # EfficientNet-Lite0's seven block stages
STAGES = len(STAGE_CHANNELS)


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """The frozen model with each convolution's batch norm folded into it (w * s, b * s + beta - mean * s with
    s = gamma / sqrt(var + eps)); the norm's activation stays. A third of the embedding's time went to the
    norms, and the features move by ~1e-5. Only timm's BatchNormAct2d right after a Conv2d is folded."""
    from timm.layers.norm_act import BatchNormAct2d

    def fold(conv: torch.nn.Conv2d, bn: BatchNormAct2d) -> torch.nn.Module:
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * s
        conv.weight = torch.nn.Parameter(conv.weight * s.view(-1, 1, 1, 1), requires_grad=False)
        conv.bias = torch.nn.Parameter(bias if conv.bias is None else conv.bias * s + bias, requires_grad=False)
        return torch.nn.Sequential(bn.drop, bn.act)

    with torch.no_grad():
        for parent in model.modules():
            names = list(parent._modules)
            for prev, name in zip(names, names[1:]):
                conv, bn = parent._modules[prev], parent._modules[name]
                if isinstance(bn, BatchNormAct2d) and isinstance(conv, torch.nn.Conv2d):
                    parent._modules[name] = fold(conv, bn)
    return model


class Embedder:
    """Pooled features of the ImageNet-pretrained backbone (frozen, eval mode, batch norms folded).

    depth None: the pre-logit features (1280-d, after the head convolution); 1-7: the pooled output of the first
    `depth` block stages. Mid-level stages describe small grey images such as Fashion-MNIST's better than the
    last ones, and cost less (docs/quality-gate.md has the measurements)."""

    def __init__(self, image_size: int = 64, batch_size: int = 256, device: torch.device | str = "cpu",
                 depth: int | None = None):
        if depth is not None and not 1 <= depth <= STAGES:
            raise ValueError(f"depth must be None or 1-{STAGES}, got {depth!r}")
        model = fold_batchnorm(build_model("efficientnet_lite0", 1, pretrained=True).eval())
        # channels_last: oneDNN's depthwise convolutions run much faster on CPU than in NCHW, and the features
        # stay equal to ~1e-5
        self.model = model.to(device, memory_format=torch.channels_last)
        self.device = torch.device(device)
        self.image_size, self.batch_size, self.depth = image_size, batch_size, depth
        self.dim = model.num_features if depth is None else STAGE_CHANNELS[depth - 1]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.depth is None:
            return m.forward_head(m.forward_features(x), pre_logits=True)
        x = m.bn1(m.conv_stem(x))
        for stage in m.blocks[:self.depth]:
            x = stage(x)
        return x.mean((2, 3))

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """N x H x W x C uint8 -> N x D float64."""
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + self.batch_size])).to(self.device)
            x = preprocess(x, self.image_size).contiguous(memory_format=torch.channels_last)
            out.append(self._features(x).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two sets of feature rows."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Fréchet distance needs at least 2 samples on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product (few samples, many dims): regularise
        eps = np.eye(len(s_a)) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


class LinearProbe:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS, deterministic)."""

    def __init__(self, n_classes: int, l2: float = 1e-3):
        self.n_classes, self.l2 = n_classes, l2

    def fit(self, feats: np.ndarray, labels: np.ndarray, steps: int = 200) -> "LinearProbe":
        self.mean, self.std = feats.mean(0), feats.std(0) + 1e-6
        x = torch.as_tensor((feats - self.mean) / self.std, dtype=torch.float64)
        y = torch.as_tensor(labels, dtype=torch.int64)
        self.w = torch.zeros(x.shape[1], self.n_classes, dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros(self.n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([self.w, self.b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ self.w + self.b, y) + self.l2 * (self.w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        """Softmax of the logits, formed without BLAS (einsum's own loop): a BLAS product's rounding depends on
        its thread count, and the gate scores shards on workers with their own."""
        x = (feats - self.mean) / self.std
        logits = np.einsum("nd,dk->nk", x, self.w.detach().numpy(), optimize=False) + self.b.detach().numpy()
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def __getstate__(self) -> dict:
        """Plain arrays: a fitted probe pickles without autograd state."""
        state = dict(self.__dict__)
        for k in ("w", "b"):
            if k in state:
                state[k] = state[k].detach().numpy()
        return state

    def __setstate__(self, state: dict) -> None:
        for k in ("w", "b"):
            if k in state:
                state[k] = torch.from_numpy(state[k])
        self.__dict__.update(state)
