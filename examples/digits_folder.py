"""Write scikit-learn's handwritten digits as a folder of PNGs, one subfolder per class: a second real
dataset that installs here (1,797 images, 8x8, 16 grey levels, 174 to 183 per class), laid out the way
a user's own data is, for `augdag run --dataset`, `augdag tune` and `augdag compare` on data that is not
Fashion-MNIST (docs/tune.md).

    .venv/bin/python examples/digits_folder.py data/digits-folder

The images stay 8x8 (ingest resizes them to `ingest.image_size`); grey levels 0..16 become 0..255.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_folder(out: str | Path) -> dict[str, int]:
    """Write out/<digit>/<index>.png for every image; return the count per class."""
    out = Path(out)
    digits = load_digits()
    counts: dict[str, int] = {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(image * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
        counts[str(label)] = counts.get(str(label), 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write (created; one subfolder per digit)")
    counts = write_folder(ap.parse_args().out)
    print(f"{sum(counts.values())} images in {len(counts)} classes: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
