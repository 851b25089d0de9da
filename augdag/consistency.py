"""Consistency training on unlabelled images, as FixMatch does it (Sohn et al. 2020, "FixMatch: Simplifying
Semi-Supervised Learning with Consistency and Confidence").

For a batch of unlabelled images the model predicts on a weak view (a random shift); where its top class
probability reaches `threshold`, that class is a pseudo-label, and the model is trained to predict it on a
strong view of the same image (a torchvision policy: RandAugment by default, on top of the weak view). With
few labels this is where augmentation pays most: it turns the rest of the raw data into a training signal.
The views are drawn from seeds derived from (seed, step), so a run gives the same bytes every time.
"""

from __future__ import annotations

import torch

from augdag.seeding import derive_seed


def weak_view(images: torch.Tensor, seed: int, step: int, translate: float = 0.125) -> torch.Tensor:
    """A random shift of up to `translate` of the side of each N x H x W x C uint8 image (no flip: a flip can
    change what an image is, a digit for one)."""
    from torchvision.transforms import v2

    t = v2.RandomAffine(degrees=0.0, translate=(translate, translate))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "consistency", "weak", step))
        out = [t(img.permute(2, 0, 1)).permute(1, 2, 0) for img in images]
    return torch.stack(out).contiguous()


def unlabelled_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor,
                    threshold: float) -> tuple[torch.Tensor, float]:
    """FixMatch's unlabelled loss: cross-entropy of the strong view's logits against the weak view's confident
    argmax, averaged over the whole unlabelled batch (unconfident images count as zero); and the share of
    images that were confident."""
    probs = torch.softmax(logits_weak.detach().float(), dim=1)
    conf, pseudo = probs.max(dim=1)
    mask = (conf >= threshold).float()
    ce = torch.nn.functional.cross_entropy(logits_strong.float(), pseudo, reduction="none")
    return (ce * mask).mean(), float(mask.mean())
