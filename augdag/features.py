"""Pretrained feature space: embeddings, a Fréchet distance in it, and a reference classifier.

Inception weights (FID's usual extractor) do not install here, so the pretrained EfficientNet-Lite0
backbone serves: its pooled 1280-d features. The reference classifier is a linear probe on those
features, trained on the real train split; it judges whether a sample still looks like its label.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from augdag.models import build_model, preprocess


class Embedder:
    """Pooled pre-logit features of the ImageNet-pretrained backbone (frozen, eval mode)."""

    def __init__(self, image_size: int = 64, batch_size: int = 256, device: torch.device | str = "cpu"):
        # channels_last: oneDNN's depthwise convolutions run much faster on CPU than in NCHW, and the features
        # stay equal to ~1e-5
        self.model = build_model("efficientnet_lite0", 1, pretrained=True).eval().to(device,
                                                                                       memory_format=torch.channels_last)
        self.device = torch.device(device)
        self.image_size, self.batch_size = image_size, batch_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """N x H x W x C uint8 -> N x D float64."""
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + self.batch_size])).to(self.device)
            x = preprocess(x, self.image_size).contiguous(memory_format=torch.channels_last)
            out.append(self.model.forward_head(self.model.forward_features(x), pre_logits=True).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.model.num_features))


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

    @torch.no_grad()
    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        x = torch.as_tensor((feats - self.mean) / self.std, dtype=torch.float64)
        return torch.softmax(x @ self.w + self.b, dim=1).numpy()
