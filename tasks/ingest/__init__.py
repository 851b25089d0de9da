"""Ingest: raw images in, a stratified seeded train/val/test split out, validated by expectations/raw*.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from augdag import gx
from augdag.data import FASHION_MNIST_CLASSES, Problem, load_fashion_mnist, load_image, problems_report, survey_folder
from augdag.errors import DataError
from augdag.log import Progress, logger
from augdag.params import IngestParams, Params
from augdag.seeding import rng
from augdag.storage import StageWriter, atomic_dir, write_json
from augdag.tasks import EXPECTATIONS, out_dir


def _per_class(labels: np.ndarray, n_classes: int, seed: int, pool: str) -> list[np.ndarray]:
    """Indices of each class in a seeded random order (independent of other classes)."""
    out = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        out.append(idx[rng(seed, "ingest", pool, c).permutation(len(idx))])
    return out


def _fit(image: np.ndarray, ip: IngestParams) -> np.ndarray:
    """Resize/convert a Fashion-MNIST image when params ask for another size or channel count."""
    if image.shape[:2] != (ip.image_size, ip.image_size):
        from PIL import Image

        image = np.asarray(Image.fromarray(image[..., 0]).resize((ip.image_size,) * 2,
                                                                 Image.Resampling.BILINEAR))[..., None]
    if ip.channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def _select_fashion_mnist(ip: IngestParams, seed: int):
    train, test = load_fashion_mnist("train"), load_fashion_mnist("t10k")
    picks = []  # (pool, index, split)
    for c, idx in enumerate(_per_class(train.labels, 10, seed, "train")):
        n_unl = ip.n_unlabelled_per_class
        n_train = ip.n_per_class if ip.n_per_class is not None else len(idx) - ip.n_val_per_class - n_unl
        if n_train + ip.n_val_per_class + n_unl > len(idx):
            raise DataError(f"fashion-mnist class {c} has {len(idx)} train images; ingest.n_per_class + "
                            f"n_val_per_class + n_unlabelled_per_class = {n_train + ip.n_val_per_class + n_unl}")
        picks += [(train, i, "train") for i in idx[:n_train]]
        picks += [(train, i, "val") for i in idx[n_train:n_train + ip.n_val_per_class]]
        start = n_train + ip.n_val_per_class
        picks += [(train, i, "unlabelled") for i in idx[start:start + n_unl]]
    for c, idx in enumerate(_per_class(test.labels, 10, seed, "test")):
        if ip.n_test_per_class > len(idx):
            raise DataError(f"fashion-mnist class {c} has {len(idx)} test images; "
                            f"ingest.n_test_per_class = {ip.n_test_per_class}")
        picks += [(test, i, "test") for i in idx[:ip.n_test_per_class]]
    rows = [(pool.ids[i], split, int(pool.labels[i]), pool.sources[i], lambda pool=pool, i=i: _fit(pool.images[i], ip))
            for pool, i, split in picks]
    return list(FASHION_MNIST_CLASSES), rows


_DECODE_KINDS = (("max_image_pixels", "too many pixels"), ("decompression bomb", "too many pixels"),
                 ("not a PNG or JPEG", "not a PNG or JPEG by its content"))


def check_folder(ip: IngestParams) -> tuple[list[str], list[tuple[Path, int]], list[Problem]]:
    """Every file of the folder checked (the scan's safety checks, then a decode of each, bounded by
    ingest.max_image_pixels), so a bad file is found now rather than when a later run selects it:
    (classes, good files, problems). With problems and ingest.on_bad_file: fail, DataError listing them all."""
    root = Path(ip.source)
    classes, files, problems = survey_folder(root)
    classes, good, problems = decode_all(
        root, classes, files, problems, lambda path: load_image(path, ip.image_size, ip.channels, ip.max_image_pixels),
        lambda err: next((k for key, k in _DECODE_KINDS if key in err), "corrupt or unreadable image"),
        ip.on_bad_file, "ingest.on_bad_file")
    return classes, good, problems


def decode_all(root: Path, classes: list[str], files: list[tuple[Path, int]], problems: list[Problem], load, kind,
               on_bad_file: str, key: str, noun: str = "image") -> tuple[list[str], list[tuple[Path, int]],
                                                                      list[Problem]]:
    """`load(path)` on every surveyed file (what it returns is dropped: memory stays bounded whatever the folder's
    size): (classes left, good (file, class) pairs, problems). A DataError is a problem of kind `kind(message)`; a
    class left without a good file is one too. With problems and on_bad_file fail, one DataError listing them all
    (`key` names the setting)."""
    progress = Progress("ingest: checking files", len(files))
    good = []
    for path, c in files:
        try:
            load(path)
            good.append((path, c))
        except DataError as err:
            problems.append(Problem(kind(str(err)), repr(str(path))[1:-1], str(err)))
        progress.update()
    left = sorted({c for _, c in good})
    for c in sorted(set(range(len(classes))) - set(left)):
        problems.append(Problem(f"class folder without readable {noun}s", str(root / classes[c]),
                                f"{root / classes[c]}: no readable {noun} in class folder '{classes[c]}'"))
    if problems and on_bad_file == "fail":
        raise DataError(problems_report(root, problems) + "\nNothing was written. Fix or remove these files, or "
                        f"set {key}: skip to leave them out (then listed in data/ingest/rejected.csv).")
    index = {c: i for i, c in enumerate(left)}
    return [classes[c] for c in left], [(p, index[c]) for p, c in good], problems


def _select_folder(ip: IngestParams, seed: int):
    root = Path(ip.source)
    classes, files, problems = check_folder(ip)
    if problems:
        logger().warning("ingest: %d bad file(s) left out (ingest.on_bad_file: skip), listed in "
                         "data/ingest/rejected.csv\n%s", len(problems), problems_report(root, problems))
    rows = [(path.relative_to(root).as_posix(), split, c, str(path),
             lambda path=path: load_image(path, ip.image_size, ip.channels, ip.max_image_pixels))
            for path, split, c in split_folder(root, classes, files, ip, seed)]
    return classes, rows, problems


def split_folder(root: Path, classes: list[str], files: list[tuple[Path, int]], ip, seed: int,
                 noun: str = "image") -> list[tuple[Path, str, int]]:
    """(file, split, class) of a folder's good files: per class in a seeded order, the test files first, then
    validation, train (ip.n_per_class, or all left but the unlabelled) and unlabelled ones. `ip` holds
    n_per_class, n_val_per_class, n_test_per_class and (images) n_unlabelled_per_class."""
    labels = np.array([c for _, c in files])
    n_unl = getattr(ip, "n_unlabelled_per_class", 0)
    out = []
    for c, idx in enumerate(_per_class(labels, len(classes), seed, "folder")):
        need = ip.n_val_per_class + ip.n_test_per_class + 1
        if len(idx) < need:
            raise DataError(f"{root / classes[c]}: class '{classes[c]}' has {len(idx)} {noun}s; at least {need} are "
                            f"needed (n_test_per_class={ip.n_test_per_class} + "
                            f"n_val_per_class={ip.n_val_per_class} + 1 train)")
        test, val = idx[:ip.n_test_per_class], idx[ip.n_test_per_class:ip.n_test_per_class + ip.n_val_per_class]
        rest = idx[ip.n_test_per_class + ip.n_val_per_class:]
        train = rest[:len(rest) - n_unl] if ip.n_per_class is None else rest[:ip.n_per_class]
        unlabelled = rest[len(train):len(train) + n_unl]
        if len(unlabelled) < n_unl or not len(train):
            raise DataError(f"{root / classes[c]}: class '{classes[c]}' has {len(idx)} {noun}s; "
                            f"ingest.n_unlabelled_per_class={n_unl} more than the test, validation and train "
                            f"{noun}s are not there")
        for split, chosen in (("train", train), ("val", val), ("test", test), ("unlabelled", unlabelled)):
            out += [(files[i][0], split, c) for i in chosen]
    return out


def validate(manifest: pd.DataFrame, classes: list[str], ip: IngestParams, results_dir: Path | None = None) -> None:
    """Run the raw suites; a failure raises ExpectationFailed naming the expectation and samples."""
    label_set = list(range(len(classes)))
    report = gx.validate_frame(
        manifest, EXPECTATIONS / "raw.json",
        {"label_set": label_set, "height": ip.image_size, "width": ip.image_size, "channels": ip.channels},
        results_path=results_dir / "raw.json" if results_dir else None,
    )
    gx.require(report)
    counts = manifest.groupby(["split", "label"]).size()
    for split in ("train", "val", "test"):
        frame = pd.DataFrame({"split": split, "label": label_set,
                              "count": [int(counts.get((split, c), 0)) for c in label_set]})
        if split == "val" and ip.n_val_per_class == 0:
            continue
        lo = 1 if split == "train" else {"val": ip.n_val_per_class, "test": ip.n_test_per_class}[split]
        hi = ip.n_per_class if split == "train" and ip.n_per_class is not None else lo if split != "train" else 10**9
        gx.require(gx.validate_frame(
            frame, EXPECTATIONS / "raw_class_counts.json", {"min_count": lo, "max_count": hi}, id_column="label",
            results_path=results_dir / f"raw_class_counts_{split}.json" if results_dir else None,
        ))


def run(p: Params, root: Path, **_) -> dict:
    ip = p.ingest
    log = logger()
    rejected: list[Problem] = []
    if ip.source == "fashion-mnist":
        classes, rows = _select_fashion_mnist(ip, p.seed)
    else:
        classes, rows, rejected = _select_folder(ip, p.seed)
    log.info("ingest: %d samples, %d classes from %s", len(rows), len(classes), ip.source)
    out = out_dir(root, "ingest")
    with atomic_dir(out) as tmp:
        w = StageWriter(tmp, ip.shard_size)
        progress = Progress("ingest", len(rows))
        for sid, split, label, source, load in rows:
            w.add(load(), sample_id=sid, split=split, branch="raw", label=label, parent_ids=[], source=source,
                  op_params="{}")
            progress.update()
        manifest = w.close()
        write_json(tmp / "classes.json", {"classes": classes})
        results = out_dir(root, "validation") / "ingest"
        results.mkdir(parents=True, exist_ok=True)
        validate(manifest, classes, ip, results_dir=results)
        summary = {"classes": len(classes), **{s: int((manifest.split == s).sum()) for s in ("train", "val", "test")}}
        if ip.n_unlabelled_per_class:  # only then: a default run's output is as before the option existed
            summary["unlabelled"] = int((manifest.split == "unlabelled").sum())
        if rejected:  # only then: a clean folder's output is as before the option existed
            pd.DataFrame(rejected, columns=list(Problem._fields)).to_csv(tmp / "rejected.csv", index=False)
            summary["rejected"] = len(rejected)
        write_json(tmp / "summary.json", summary)
    return summary



def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """A raw sample is not regenerated: the hash of the stored image."""
    from augdag.storage import StageData, content_hash

    image = StageData(out_dir(root, "ingest")).image(r)
    return {"replayed_hash": content_hash(image), "note": "raw sample: hash of the stored image"}
