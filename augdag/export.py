"""`augdag export`: a stage's samples in formats other tools train from (docs/export.md).

Images: an ImageFolder tree of PNGs with samples.csv, a Hugging Face `datasets` folder (save_to_disk), or
WebDataset tar shards. Texts: CSV, JSON Lines, or a Hugging Face folder. The export is written into a hidden
sibling of OUT and renamed into place at the end (storage.atomic_dir), so a failure leaves no half-written
export and the previous one, if any, stays. Every image's content hash is checked against the manifest as it
is read, so a stage republished meanwhile or a corrupt shard stops the export instead of mixing outputs.

A mixed sample's `label` (and ImageFolder class) is its soft label's largest class; `soft_label` is empty for a
hard label. `weight` is merge's sampling weight (1.0 in stages without one). Files and WebDataset keys are the
sample ids made safe for every file system (key_names); samples.csv, the json member and the sample_id column
say which sample each is.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from augdag.errors import AugdagError, DataError
from augdag.layout import out_dir

IMAGE_FORMATS = ("imagefolder", "hf", "webdataset")
TEXT_FORMATS = ("csv", "jsonl", "hf")
# stages whose folder holds their samples
EXPORTABLE = ("ingest", "traditional", "mix", "generative", "crossdomain", "merge")
MARKER = "augdag-export.json"  # in every export: what it holds; --overwrite replaces only a folder that has one
MAXCOUNT = 10000  # webdataset: samples per tar shard
CHUNK = 1024  # samples read (and hash-checked) at a time
TAR_MTIME = 0  # webdataset members: fixed mtime, uid/gid 0, no user names, mode 0644 (same input, same bytes)
KEY_MAX = 90  # characters of a file name / WebDataset key before the extension (tar's ustar names hold 100)
FIELDS = ["sample_id", "file", "split", "label", "class", "soft_label", "weight", "branch", "parent_ids", "source",
          "content_hash"]
TEXT_FIELDS = ["sample_id", "split", "label", "class", "text", "soft_label", "weight", "branch", "parent_ids",
               "source", "content_hash"]


class ExportError(AugdagError):
    """The stage, format or output folder of an export cannot be used."""


# ------------------------------------------------------------------------------------------------ names

_KEY_SAFE = re.compile(r"[A-Za-z0-9_~-]")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
_FOLDER_UNSAFE = set('%<>:"/\\|?*') | {chr(i) for i in range(32)} | {"\x7f"}


def _pct(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))


def safe_key(sample_id: str) -> str:
    """A sample id as a file name and WebDataset key: letters, digits, `_`, `-` and `~` kept, every other
    character percent-encoded as UTF-8 (`urllib.parse.unquote` gives the id back), a Windows device name's
    first letter encoded too. No dots (WebDataset splits a member name at its first dot) and no slashes."""
    key = "".join(ch if _KEY_SAFE.fullmatch(ch) else _pct(ch) for ch in sample_id)
    if key.upper() in _WINDOWS_RESERVED:
        key = _pct(key[0]) + key[1:]
    return key


def safe_folder(name: str) -> str:
    """A class or split name as a folder name on every file system: `%`, `/`, `\\`, `<>:"|?*`, control
    characters, a leading dot or space and a trailing dot or space percent-encoded (unquote reverses it)."""
    out = "".join(_pct(ch) if ch in _FOLDER_UNSAFE else ch for ch in name)
    if not out:
        return "%00"  # "" cannot be a folder; %00 is no character a name can hold
    if out[0] in ". ":
        out = _pct(out[0]) + out[1:]
    if out[-1] in ". ":
        out = out[:-1] + _pct(out[-1])
    if out.split(".")[0].upper() in _WINDOWS_RESERVED:
        out = _pct(out[0]) + out[1:]
    return out


class _Names:
    """Unique names within one export, ignoring case (macOS and Windows file systems do): a name that is too long,
    or that another sample's already took, gets `~~` and 16 hex of its sha256 instead of its tail."""

    def __init__(self, limit: int = KEY_MAX):
        self.limit, self.taken = limit, set()

    def __call__(self, name: str, of: str) -> str:
        if len(name) > self.limit or name.casefold() in self.taken:
            base = re.sub(r"%[0-9A-F]?$", "", name[:self.limit - 18])  # never cut a %XX in two
            name = f"{base}~~{hashlib.sha256(of.encode('utf-8')).hexdigest()[:16]}"
            n = 0
            while name.casefold() in self.taken:  # not seen in practice; keeps names unique regardless
                n += 1
                name = f"{base}~~{hashlib.sha256(f'{of}#{n}'.encode()).hexdigest()[:16]}"
        self.taken.add(name.casefold())
        return name


def _folder_names(names: list[str]) -> list[str]:
    """safe_folder of each name, unique ignoring case (a clash gets `~<position>`)."""
    out, taken = [], set()
    for i, n in enumerate(names):
        f = safe_folder(n)
        if f.casefold() in taken:
            f = f"{f}~{i}"
        taken.add(f.casefold())
        out.append(f)
    return out


# ------------------------------------------------------------------------------------------------ checks

def _stage_folder(root: Path, stage: str) -> Path:
    from augdag.tasks import STAGES

    if stage not in STAGES:
        raise ExportError(f"unknown stage {stage!r}; stages with samples to export: {', '.join(EXPORTABLE)}")
    if stage not in EXPORTABLE:
        raise ExportError(f"stage {stage} has no samples of its own to export; stages with samples to export: "
                          f"{', '.join(EXPORTABLE)}")
    folder = out_dir(root, stage)
    from augdag.storage import MANIFEST

    if not (folder / MANIFEST).is_file():
        raise ExportError(f"{folder}: stage {stage} has no output yet; run the pipeline first (augdag run, or "
                          f"dvc repro {stage})")
    return folder


def _check_format(stage: str, fmt: str, text: bool) -> None:
    allowed = TEXT_FORMATS if text else IMAGE_FORMATS
    if fmt in allowed:
        return
    kind = "texts" if text else "images"
    if fmt in IMAGE_FORMATS + TEXT_FORMATS:
        raise ExportError(f"stage {stage} holds {kind}: --format {fmt} is for "
                          f"{'images' if text else 'texts'}; formats for {kind}: {', '.join(allowed)}")
    raise ExportError(f"unknown format {fmt!r}; formats for images: {', '.join(IMAGE_FORMATS)}; "
                      f"for texts: {', '.join(TEXT_FORMATS)} (stage {stage} holds {kind})")


_EXTRA = {"hf": "datasets"}  # webdataset shards are plain tar files: reading them back needs the package


def _check_extra(fmt: str) -> None:
    import importlib.util

    module = _EXTRA.get(fmt)
    if module and importlib.util.find_spec(module) is None:
        raise ExportError(f"--format {fmt} needs the {module} package, which is not installed: "
                          "pip install 'augdag[export]'")


def _check_out(root: Path, out: Path, overwrite: bool) -> None:
    real = out.resolve()
    data = (root / "data").resolve()
    if real == data or data in real.parents or real in data.parents:
        where = "sit inside" if data in real.parents else "replace"
        raise ExportError(f"{out}: an export there would {where} the project's data folder {data} (its stage "
                          "outputs); export to a folder outside it")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"{out}: exists and is not a folder; export to a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out}: folder is not empty; export to a new or empty folder, or pass --overwrite "
                              "(overwrite=True) to replace a previous export")
        if not (out / MARKER).is_file():
            raise ExportError(f"{out}: folder is not empty and holds no earlier export (no {MARKER}); --overwrite "
                              "replaces only a previous augdag export; export to a new or empty folder")


def _classes(root: Path, m) -> list[str]:
    """The class names, checked to cover every label of the manifest `m`."""
    from augdag.layout import classes

    names = classes(root)
    over = m[m["label"].astype(int) >= len(names)]
    if len(over):
        raise DataError(f"sample {over['sample_id'].iloc[0]!r} has label {int(over['label'].iloc[0])}, but "
                        f"{out_dir(root, 'ingest') / 'classes.json'} names {len(names)} classes")
    return names


# ------------------------------------------------------------------------------------------------ rows

def _soft(v, n_classes: int, sid: str) -> list[float]:
    """A soft label as a list of floats that are float32 values written short (0.54464287, not
    0.5446428656578064); [] for a hard label."""
    if v is None or (isinstance(v, float) and v != v):
        return []
    a = np.asarray(v, np.float32)
    if a.shape != (n_classes,):
        raise DataError(f"sample {sid!r}: soft label of {a.size} values for {n_classes} classes")
    return [float(str(x)) for x in a]


_READ = ("sample_id", "split", "label", "soft_label", "weight", "branch", "parent_ids", "source", "content_hash",
         "shard", "index", "height", "width", "channels", "text")


def _records(columns: dict, classes: list[str], idx: np.ndarray) -> list[dict]:
    """The exported fields of manifest rows `idx` (`columns`: the manifest's columns as arrays)."""
    from augdag.storage import hard_label, sample_weights

    cols = {c: columns[c][idx] for c in _READ[:9]}
    weights = sample_weights(cols["weight"])
    out = []
    for i in range(len(idx)):
        sid = str(cols["sample_id"][i])
        soft = _soft(cols["soft_label"][i], len(classes), sid)
        label = hard_label(soft, cols["label"][i])
        parents = cols["parent_ids"][i]
        src = cols["source"][i]
        out.append({"sample_id": sid, "split": str(cols["split"][i]), "label": label, "class": classes[label],
                    "soft_label": soft, "weight": float(weights[i]),
                    "branch": str(cols["branch"][i]),
                    "parent_ids": [] if parents is None or not len(parents) else [str(p) for p in parents],
                    "source": None if src is None or src != src else str(src),
                    "content_hash": str(cols["content_hash"][i])})
    return out


def _splits(m) -> list[str]:
    """The splits in the manifest: train, val, test first, then any other in sorted order."""
    present = set(m["split"].astype(str))
    return [s for s in ("train", "val", "test") if s in present] + sorted(present - {"train", "val", "test"})


def _samples(data, columns: dict, classes: list[str], split: str, text: bool,
             progress) -> Iterator[tuple[dict, object]]:
    """(record, HxWxC image or text) of one split's rows in manifest order, CHUNK rows read at a time, each
    checked against its content hash."""
    from augdag.storage import content_hash, text_hash

    where = np.flatnonzero(columns["split"] == split)
    for start in range(0, len(where), CHUNK):
        idx = where[start:start + CHUNK]
        records = _records(columns, classes, idx)
        if text:
            items = [None if t is None or t != t else str(t) for t in columns["text"][idx]]
        else:
            items = data.images_of({c: columns[c][idx] for c in ("sample_id", "shard", "index", "height", "width",
                                                                  "channels")})
        for r, item in zip(records, items):
            if item is None:
                pass  # a text Mixup pair: no text of its own (its parents are in parent_ids)
            elif (text_hash(item) if text else content_hash(item)) != r["content_hash"]:
                raise DataError(f"{data.folder}: sample {r['sample_id']!r} does not match its content hash (its "
                                "data is corrupt, or the stage was rerun during the export); nothing was exported")
            yield r, item
        progress.update(len(idx))


def _png(image: np.ndarray) -> bytes:
    """Lossless PNG: 1 channel as mode L, 2 as LA, 3 as RGB, 4 as RGBA."""
    from PIL import Image

    c = image.shape[2]
    if c not in (1, 2, 3, 4):
        raise DataError(f"cannot write an image of {c} channels as PNG (1 to 4 channels)")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[:, :, 0] if c == 1 else image)).save(buf, format="PNG")
    return buf.getvalue()


def _json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------ writers

def _imagefolder(tmp: Path, samples, splits, classes, names, **_) -> dict:
    folders = _folder_names(classes)
    made: set[Path] = set()
    with open(tmp / "samples.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        for split in splits:
            for r, image in samples(split):
                d = tmp / safe_folder(split) / folders[r["label"]]
                if d not in made:
                    d.mkdir(parents=True, exist_ok=True)
                    made.add(d)
                name = names(safe_key(r["sample_id"]), r["sample_id"]) + ".png"
                (d / name).write_bytes(_png(image))
                w.writerow({**r, "file": (d / name).relative_to(tmp).as_posix(), "soft_label": _json(r["soft_label"]),
                            "parent_ids": _json(r["parent_ids"]), "source": r["source"] or ""})
    return {"class_folders": folders}


def _webdataset(tmp: Path, samples, splits, classes, names, maxcount: int = MAXCOUNT, **_) -> dict:
    """Tar shards as webdataset.TarWriter writes them (members KEY.cls, KEY.json, KEY.png, ustar), written with
    tarfile so that every header field is fixed: the same samples give the same bytes."""
    import tarfile

    shards: dict[str, list[str]] = {}
    for split in splits:
        tar = None
        count = 0
        try:
            for r, image in samples(split):
                if tar is None or count >= maxcount:
                    if tar is not None:
                        tar.close()
                    name = f"{safe_folder(split)}-{len(shards.setdefault(split, [])):06d}.tar"
                    shards[split].append(name)
                    tar = tarfile.open(tmp / name, "w", format=tarfile.USTAR_FORMAT)
                    count = 0
                meta = {k: r[k] for k in ("sample_id", "split", "label", "class", "soft_label", "weight", "branch",
                                          "parent_ids", "source", "content_hash")}
                key = names(safe_key(r["sample_id"]), r["sample_id"])
                for ext, payload in (("cls", str(r["label"]).encode("ascii")), ("json", _json(meta).encode("utf-8")),
                                     ("png", _png(image))):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(payload), TAR_MTIME, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(payload))
                count += 1
        finally:
            if tar is not None:
                tar.close()
    return {"shards": shards}


def _hf(tmp: Path, samples, splits, classes, names, text: bool = False, **_) -> dict:
    import datasets
    from datasets.arrow_writer import ArrowWriter

    features = datasets.Features({
        **({"text": datasets.Value("string")} if text else {"image": datasets.Image()}),
        "label": datasets.ClassLabel(names=classes),
        "soft_label": datasets.List(datasets.Value("float32")),
        "weight": datasets.Value("float64"),
        "sample_id": datasets.Value("string"),
        "branch": datasets.Value("string"),
        "parent_ids": datasets.List(datasets.Value("string")),
        "source": datasets.Value("string"),
        "content_hash": datasets.Value("string"),
    })
    build = tmp / ".build"
    build.mkdir()
    parts = {}
    for split in splits:
        path = build / f"{safe_folder(split)}.arrow"
        writer = ArrowWriter(features=features, path=str(path))
        try:
            batch: list[tuple[dict, object]] = []
            for item in samples(split):
                batch.append(item)
                if len(batch) >= CHUNK:
                    writer.write_batch(_hf_batch(features, batch, text))
                    batch = []
            if batch:
                writer.write_batch(_hf_batch(features, batch, text))
            writer.finalize()
        finally:
            writer.close()
        parts[split] = datasets.Dataset.from_file(str(path), info=datasets.DatasetInfo(features=features),
                                                  split=datasets.NamedSplit(split))
    quiet = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # augdag's Progress logs the export; no second bar on stderr
    try:
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    del parts
    shutil.rmtree(build)
    return {}


def _hf_batch(features, batch, text: bool) -> dict:
    cols = {k: [r[k] for r, _ in batch] for k in ("label", "soft_label", "weight", "sample_id", "branch",
                                                  "parent_ids", "source", "content_hash")}
    cols["text" if text else "image"] = [x if text else {"bytes": _png(x), "path": None} for _, x in batch]
    return features.encode_batch(cols)


def _table(suffix: str) -> Callable:
    def write(tmp: Path, samples, splits, classes, names, **_) -> dict:
        files = {}
        for split in splits:
            name = f"{safe_folder(split)}.{suffix}"
            files[split] = name
            with open(tmp / name, "w", newline="", encoding="utf-8") as f:
                w = None
                if suffix == "csv":
                    w = csv.DictWriter(f, fieldnames=TEXT_FIELDS, lineterminator="\n")
                    w.writeheader()
                for r, t in samples(split):
                    r = {**r, "text": t}
                    if w is None:
                        f.write(_json({k: r[k] for k in TEXT_FIELDS}) + "\n")
                    else:
                        w.writerow({**r, "text": "" if t is None else t, "soft_label": _json(r["soft_label"]),
                                    "parent_ids": _json(r["parent_ids"]), "source": r["source"] or ""})
        return {"files": files}
    return write


WRITERS: dict[str, Callable] = {"imagefolder": _imagefolder, "webdataset": _webdataset, "hf": _hf,
                                "csv": _table("csv"), "jsonl": _table("jsonl")}


# ------------------------------------------------------------------------------------------------ export

def export(root: str | Path, stage: str, fmt: str, out: str | Path, overwrite: bool = False,
           maxcount: int = MAXCOUNT) -> dict:
    """Write stage `stage` of the project at `root` into folder `out` (relative to the current folder) as
    `fmt`: imagefolder, hf or webdataset for images; csv, jsonl or hf for texts. A non-empty `out` is refused
    unless `overwrite` and it holds a previous export. Returns {stage, format, count, splits, out, bytes,
    seconds}."""
    from augdag.log import Progress, logger
    from augdag.storage import StageData, atomic_dir

    root = Path(root).resolve()
    out = Path(out).expanduser().absolute()
    if not isinstance(maxcount, int) or maxcount < 1:
        raise ExportError(f"maxcount must be a whole number >= 1, not {maxcount!r}")
    folder = _stage_folder(root, stage)
    data = StageData(folder)
    m = data.manifest
    if not len(m):
        raise ExportError(f"{folder}: stage {stage} has no samples (its manifest is empty); nothing to export")
    text = bool(m["shard"].isna().all())  # text stages keep no shards (a Mixup pair has no text either)
    _check_format(stage, fmt, text)
    _check_extra(fmt)
    _check_out(root, out, overwrite)
    classes = _classes(root, m)
    splits = _splits(m)
    t0 = time.monotonic()
    progress = Progress(f"export {stage} ({fmt})", len(m))
    names = _Names()
    logger().info("export: %d samples of %s as %s into %s", len(m), stage, fmt, out)

    columns = {c: m[c].to_numpy() for c in _READ}  # once: a nullable column's to_numpy() copies it
    columns["split"] = columns["split"].astype(str)

    def samples(split: str):
        return _samples(data, columns, classes, split, text, progress)

    with atomic_dir(out) as tmp:
        extra = WRITERS[fmt](tmp, samples, splits, classes, names, maxcount=maxcount, text=text)
        counts = m["split"].astype(str).value_counts()
        marker = {"augdag_export": 1, "stage": stage, "format": fmt, "modality": "text" if text else "image",
                  "count": int(len(m)), "splits": {s: int(counts[s]) for s in splits}, "classes": classes,
                  **({} if text else {"channels": sorted({int(c) for c in m["channels"]})}), **extra}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = {"stage": stage, "format": fmt, "count": marker["count"], "splits": marker["splits"], "out": str(out),
               "bytes": size, "seconds": round(time.monotonic() - t0, 3)}
    logger().info("export: wrote %d samples, %d bytes in %.1f s to %s", summary["count"], size, summary["seconds"],
                  out)
    return summary

