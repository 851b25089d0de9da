"""Raw data readers: Fashion-MNIST's IDX files and a user's folder of images (one subfolder per class)."""

from __future__ import annotations

import gzip
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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


def scan_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted subfolder names) and (file, class index) pairs, checked for safety: a link
    that leads outside the folder, a file that is not a regular file (a FIFO would block the read) and
    a name that is not UTF-8 are refused, naming the file (the first problem raises; `survey_folder`
    collects them all)."""
    classes, files, problems = survey_folder(root, stop_at_first=True)
    return classes, files


class Problem(NamedTuple):
    kind: str  # what is wrong, shared by the files with the same fault (the grouping of the report)
    path: str
    reason: str


def survey_folder(root: str | Path, stop_at_first: bool = False, suffixes: set[str] = IMAGE_SUFFIXES,
                  noun: str = "image") -> tuple[list[str], list[tuple[Path, int]], list[Problem]]:
    """`scan_folder`'s checks on every file, collecting the problems instead of stopping at the first:
    (classes, good (file, class index) pairs, problems). A class folder left with no image is a problem of
    its own (and its class is dropped from `classes`). The folder missing or without class subfolders
    still raises: there is nothing to survey. `suffixes` and `noun` name the files looked for (audio: .wav,
    .flac, "audio file")."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected one subfolder of {noun}s per class)")
    real_root = root.resolve()
    problems: list[Problem] = []

    def bad(kind: str, path: Path, reason: str) -> None:
        if stop_at_first:  # a name that is not UTF-8 is shown escaped
            raise DataError(f"{str(path)!r}: {reason}" if kind == "file name not UTF-8" else f"{path}: {reason}")
        problems.append(Problem(kind, repr(str(path))[1:-1], reason))

    def utf8(p: Path) -> bool:
        try:
            p.name.encode("utf-8")
            return True
        except UnicodeEncodeError:  # a byte name that is not UTF-8 (Python keeps it as surrogate escapes)
            bad("file name not UTF-8", p, "file name is not valid UTF-8; rename it")
            return False

    subdirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and utf8(p)]
    names = sorted(p.name for p in subdirs)
    if not names:
        example = "<image>.png" if noun == "image" else f"<{noun.split()[0]}>{min(suffixes)}"
        raise DataError(f"{root}: no class subfolders; lay {noun}s out as {root}/<class name>/{example}")
    found: dict[str, list[Path]] = {}
    for name in names:
        cdir = root / name
        if cdir.is_symlink() or not cdir.resolve().is_relative_to(real_root):
            bad("link outside the folder", cdir, f"class folder is a link pointing outside {root}; refused")
            continue
        keep = _image_files(cdir, root, real_root, bad, utf8, suffixes, noun)
        if keep:
            found[name] = keep
        else:
            bad(f"class folder without {noun}s", cdir, f"class folder '{name}' holds no {noun}s")
    classes = [n for n in names if n in found]
    return classes, [(p, ci) for ci, n in enumerate(classes) for p in found[n]], problems


def _image_files(folder: Path, root: Path, real_root: Path, bad, utf8, suffixes: set[str] = IMAGE_SUFFIXES,
                 noun: str = "image") -> list[Path]:
    """The image (or `noun`) files under `folder` (recursively, sorted), the unsafe or foreign ones reported to
    `bad`."""
    keep = []
    for p in sorted(folder.rglob("*")):
        if p.name.startswith(".") or p.is_dir() or not utf8(p):
            continue
        if p.is_symlink() and not p.resolve().is_relative_to(real_root):
            bad("link outside the folder", p, f"link pointing outside {root}; refused")
        elif not p.is_file():
            bad("not a regular file", p, "not a regular file (a FIFO, socket or device); refused")
        elif p.suffix.lower() not in suffixes:
            article = "an" if noun[0] in "aeiou" else "a"
            bad(f"not {article} {noun} file" if noun == "image" else f"not {article} {noun}", p,
                f"not {article} {noun}{' file' if noun == 'image' else ''} (allowed: {', '.join(sorted(suffixes))})")
        else:
            keep.append(p)
    return keep


def scan_images(root: str | Path, what: str = "image folder") -> list[Path]:
    """Every image file under `root`, in subfolders or not (no classes: e.g. unlabelled target-domain images),
    with scan_folder's safety checks; the first problem raises a DataError naming the file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {what} not found")
    real_root = root.resolve()

    def bad(kind: str, path: Path, reason: str) -> None:
        raise DataError(f"{str(path)!r}: {reason}" if kind == "file name not UTF-8" else f"{path}: {reason}")

    def utf8(p: Path) -> bool:
        try:
            p.name.encode("utf-8")
            return True
        except UnicodeEncodeError:
            bad("file name not UTF-8", p, "file name is not valid UTF-8; rename it")
            return False

    files = _image_files(root, root, real_root, bad, utf8)
    if not files:
        raise DataError(f"{root}: {what} holds no images (allowed: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def read_labelled_folder(folder: str | Path, class_names: list[str], size: int, channels: int, max_pixels: int,
                         what: str) -> tuple[list[Path], np.ndarray, list[np.ndarray]]:
    """(files, labels, images) of a folder with one subfolder of images per class, its classes mapped onto the
    raw data's `class_names` (a name holding '/', as Fashion-MNIST's 'T-shirt/top', is spelled with '_' as a
    folder name); a class folder that is not one of them is a DataError naming `what` (the params key)."""
    found, files = scan_folder(folder)
    by_folder = {c.replace("/", "_"): i for i, c in enumerate(class_names)}
    unknown = [c for c in found if c not in by_folder]
    if unknown:
        raise DataError(f"{what} = {folder}: class folders {unknown} are not classes of the raw data "
                        f"(allowed: {sorted(by_folder)})")
    labels = np.array([by_folder[found[ci]] for _, ci in files], dtype=np.int64)
    return [p for p, _ in files], labels, [load_image(p, size, channels, max_pixels) for p, _ in files]


def problems_report(root: str | Path, problems: list[Problem], shown: int = 5) -> str:
    """Every problem, grouped by kind: the count and the first paths of each."""
    groups: dict[str, list[Problem]] = {}
    for pr in problems:
        groups.setdefault(pr.kind, []).append(pr)
    lines = [f"{root}: {len(problems)} problem(s) in the dataset folder"]
    for kind, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {kind} ({len(items)}):")
        lines += [f"    {pr.path}: {pr.reason.removeprefix(pr.path + ': ')}" for pr in items[:shown]]
        if len(items) > shown:
            lines.append(f"    … and {len(items) - shown} more")
    return "\n".join(lines)


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
