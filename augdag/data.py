"""Raw data readers: Fashion-MNIST's IDX files and a user's folder of images (one subfolder per class)."""

from __future__ import annotations

import gzip
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from augdag.errors import DataError

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_DIRS = [
    Path(os.environ.get("AUGDAG_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")),
    Path(__file__).resolve().parent.parent / ".cache" / "debs" / "usr" / "share" / "datasets" / "fashion-mnist",
]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class Pool:
    """All candidate images of one origin (e.g. Fashion-MNIST train), with labels and sources."""

    images: np.ndarray  # N x H x W x C uint8
    labels: np.ndarray
    sources: list[str]
    ids: list[str]


def fashion_mnist_dir() -> Path:
    for d in FASHION_MNIST_DIRS:
        if (d / "train-images-idx3-ubyte.gz").exists():
            return d
    tried = ", ".join(str(d) for d in FASHION_MNIST_DIRS)
    raise DataError(
        f"Fashion-MNIST not found (looked in {tried}). Install it with `make setup` "
        "(Debian package dataset-fashion-mnist) or set AUGDAG_FASHION_MNIST to its folder."
    )


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read gzip IDX file: {err}") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or ndim != expected_ndim:
        raise DataError(f"{path}: not a uint8 IDX file with {expected_ndim} dimensions")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    n = int(np.prod(dims))
    if len(raw) - header != n:
        raise DataError(f"{path}: IDX body has {len(raw) - header} bytes, header promises {n}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(part: str) -> Pool:
    """part: 'train' or 't10k'."""
    d = fashion_mnist_dir()
    images = read_idx(d / f"{part}-images-idx3-ubyte.gz", 3)[..., None]
    labels = read_idx(d / f"{part}-labels-idx1-ubyte.gz", 1).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{d}: {part} has {len(images)} images but {len(labels)} labels")
    name = "train" if part == "train" else "test"
    sources = [f"fashion-mnist:{part}-images-idx3-ubyte.gz#{i}" for i in range(len(labels))]
    ids = [f"fmnist-{name}-{i:05d}" for i in range(len(labels))]
    return Pool(images, labels, sources, ids)


def _utf8_name(p: Path) -> None:
    try:
        p.name.encode("utf-8")
    except UnicodeEncodeError:  # a byte name that is not UTF-8 (Python keeps it as surrogate escapes)
        raise DataError(f"{str(p)!r}: file name is not valid UTF-8; rename it") from None


def scan_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted subfolder names) and (file, class index) pairs, checked for safety: a link
    that leads outside the folder, a file that is not a regular file (a FIFO would block the read) and
    a name that is not UTF-8 are refused, naming the file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected one subfolder of images per class)")
    real_root = root.resolve()
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for p in subdirs:
        _utf8_name(p)
    classes = sorted(p.name for p in subdirs)
    if not classes:
        raise DataError(f"{root}: no class subfolders; lay images out as {root}/<class name>/<image>.png")
    files: list[tuple[Path, int]] = []
    for ci, name in enumerate(classes):
        cdir = root / name
        if cdir.is_symlink() or not cdir.resolve().is_relative_to(real_root):
            raise DataError(f"{cdir}: class folder is a link pointing outside {root}; refused")
        found = []
        for p in sorted(cdir.rglob("*")):
            if p.name.startswith(".") or p.is_dir():
                continue
            _utf8_name(p)
            if p.is_symlink() and not p.resolve().is_relative_to(real_root):
                raise DataError(f"{p}: link pointing outside {root}; refused")
            if not p.is_file():
                raise DataError(f"{p}: not a regular file (a FIFO, socket or device); refused")
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p}: not an image file (allowed: {', '.join(sorted(IMAGE_SUFFIXES))})")
            found.append(p)
        if not found:
            raise DataError(f"{cdir}: class folder '{name}' holds no images")
        files.extend((p, ci) for p in found)
    return classes, files


IMAGE_FORMATS = ["PNG", "JPEG"]  # decoded by content: a .png holding another format is refused


def load_image(path: Path, size: int, channels: int, max_pixels: int) -> np.ndarray:
    """Decode, convert to L or RGB, resize to size x size (bilinear); HxWxC uint8.

    Only PNG and JPEG are decoded (whatever the suffix says), and the pixel count the header claims is
    checked against `max_pixels` before anything is decoded. Pillow's own guard (its hard limit, twice
    Image.MAX_IMAGE_PIXELS) still refuses larger claims even when `max_pixels` is raised above it."""
    try:
        with warnings.catch_warnings():
            # Pillow's warning threshold is not ours: ingest.max_image_pixels decides, just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise DataError(f"{path}: {w}x{h} pixels exceeds ingest.max_image_pixels={max_pixels}; refused")
                im.load()
                im = im.convert("L" if channels == 1 else "RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: refused as a decompression bomb (the header claims more pixels than Pillow's "
                        f"limit): {err}") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a PNG or JPEG image (by its content, whatever its suffix); refused") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, MemoryError) as err:
        raise DataError(f"{path}: corrupt or unreadable image: {err}") from None
    return a[..., None] if a.ndim == 2 else a
