"""Traditional-branch throughput (samples/s) against a per-image torchvision v2 Compose loop and Albumentations.

Same ops, probabilities and ranges for all three: they are built from params.yaml's `traditional.ops`
(plus `--set`), so the default is hflip p .5, rotation ±15° p .5, affine (translate ±10 %, scale
0.9-1.1) p .5, colour jitter (brightness/contrast/saturation ±0.2) p .5. Each case is Fashion-MNIST's
train images through the real ingest stage (28x28x1 as is; 224x224x3 resized and replicated to RGB by
ingest, `ingest.image_size=224 ingest.channels=3`), one variant per image.

Rows, each timed `--repeats` times (round robin over the rows, so a load change hits all alike), median:

- augdag, per-chunk function: what the traditional stage runs per chunk (512 samples, or
  params.runner.chunk_size; `augdag.tasks.traditional._chunk`: open the ingest output, per sample
  derive its seed, draw each op's params from its own generator, apply them, record the params as
  JSON) plus what the stage's writer computes per sample for lineage (sha256 `content_hash`, the
  manifest row); no output written. Images are read from the ingest shards (memory-mapped, in the
  page cache), as in the stage.
- augdag, whole stage: `run_stage("traditional")` end to end, writing the shards and manifest.
- torchvision v2 `Compose` loop: per image, uint8 HxWxC numpy -> CxHxW uint8 tensor -> Compose -> HxWxC
  uint8 numpy (images preloaded in memory; no lineage).
- Albumentations `Compose` loop: per image, uint8 HxWxC numpy in and out (preloaded; no lineage), and
  again with `save_applied_params=True` (it then records each applied transform's params, the nearest
  it has to augdag's lineage).

The ratio columns are augdag's samples/s over the baseline's (>1: augdag is faster); targets (issue
7): >= 2x Albumentations at 28x28, >= 1x at 224x224.

Where the libraries differ (as close as they allow):
- augdag computes in float32 [0, 1] and rounds back to uint8 once; torchvision and Albumentations
  work on uint8 (torchvision converts to float inside rotate/affine and rounds per op).
- Colour jitter: augdag applies brightness, contrast, saturation in that order; torchvision and
  Albumentations shuffle the order per image. Hue is off in all three; saturation is a no-op on
  one channel in all three.
- Rotation/affine: bilinear, zero fill, output the input's size in all three (A.Rotate with
  crop_border=False, A.Affine with fit_output=False). Affine translation: augdag and torchvision
  draw ±10 % of the size and round to whole pixels; Albumentations draws a percentage and applies
  it sub-pixel.
- gaussian_noise (p 0 by default): torchvision v2's GaussianNoise takes one sigma, so it gets the
  middle of `std`, in float (ToDtype around it); Albumentations' GaussNoise takes the range.
- gaussian_blur, resized_crop, random_erasing, vflip (p 0 by default): mapped to GaussianBlur /
  RandomResizedCrop / RandomErasing / RandomVerticalFlip and A.GaussianBlur / A.RandomResizedCrop /
  A.Erasing / A.VerticalFlip with the same ranges.

Every row is timed inside `augdag.env.frozen_heap()`, as run_stage runs every stage: the ~650,000
objects alive after the imports are left out of the GC's full collections. Each such collection walked
them all (0.5 s) and fell inside whichever row was running when the garbage of all rows reached its
threshold, so a row's repeats spread up to 2x (0.65-1.34 s per 5,000 at 28x28 for augdag's before).

glibc's allocator is set up as the `augdag` command sets it for every stage (augdag.env.tune_malloc: freed
memory kept for reuse), for every row alike; AUGDAG_MALLOC=default leaves it alone.

Threads: torch's intra-op threads are set to `--threads` (default 1) for every row, and OpenCV's
(Albumentations' backend) to the same with cv2.setNumThreads; the per-image loops and the augdag
rows run in one Python thread unless `--workers N` (augdag rows only: chunks through a thread pool,
as `augdag stage traditional --workers 2` in dvc.yaml does). numpy has no threads here.

    .venv/bin/python bench/traditional.py
    .venv/bin/python bench/traditional.py --cases 28x28x1:60000 224x224x3:2000 --repeats 5 --workers 1 2
    .venv/bin/python bench/traditional.py --set traditional.ops.gaussian_blur.p=0.5

Albumentations comes with `make bench-setup` (the `bench` extra); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from _util import REPO, chunk_kw, load, machine_line, median, spread

from augdag.env import frozen_heap, set_offline, tune_malloc

set_offline()
MALLOC_TUNED = tune_malloc()  # as the augdag command (every stage) does: all rows, the baselines too

from augdag import storage  # noqa: E402
from augdag.params import OpsParams, Params, dotted_to_nested, load_params  # noqa: E402
from augdag.tasks import out_dir, run_stage  # noqa: E402
from augdag.tasks import traditional as trad  # noqa: E402
from augdag.tasks.strategy import load_plan  # noqa: E402

CHUNK = 512  # tasks/traditional.run's default chunk size; params.runner.chunk_size where the params have it


# --- baselines built from the same OpsParams ----------------------------------------------------------

def torchvision_compose(ops: OpsParams, h: int, w: int):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    bil = InterpolationMode.BILINEAR
    seq = []
    for name, cfg in ops:
        if cfg.p <= 0:
            continue
        if name == "hflip":
            seq.append(T.RandomHorizontalFlip(cfg.p))
            continue
        if name == "vflip":
            seq.append(T.RandomVerticalFlip(cfg.p))
            continue
        if name == "random_erasing":
            seq.append(T.RandomErasing(cfg.p, scale=cfg.scale, ratio=cfg.ratio, value=round(cfg.value * 255)))
            continue
        t = {
            "rotation": lambda: T.RandomRotation(cfg.degrees, interpolation=bil, fill=0),
            "resized_crop": lambda: T.RandomResizedCrop((h, w), scale=cfg.scale, ratio=cfg.ratio, interpolation=bil,
                                                        antialias=True),
            "affine": lambda: T.RandomAffine(0.0, translate=(cfg.translate, cfg.translate), scale=cfg.scale,
                                             interpolation=bil, fill=0),
            "color_jitter": lambda: T.ColorJitter(cfg.brightness or None, cfg.contrast or None, cfg.saturation or None),
            "gaussian_blur": lambda: T.GaussianBlur(cfg.kernel_size, sigma=cfg.sigma),
            "gaussian_noise": lambda: T.Compose([T.ToDtype(torch.float32, scale=True),
                                                 T.GaussianNoise(0.0, sum(cfg.std) / 2, clip=True),
                                                 T.ToDtype(torch.uint8, scale=True)]),
        }[name]()
        seq.append(T.RandomApply([t], p=cfg.p))
    return T.Compose(seq)


def albumentations_compose(ops: OpsParams, h: int, w: int, save_applied_params: bool = False):
    import albumentations as A
    import cv2

    lin, const = cv2.INTER_LINEAR, cv2.BORDER_CONSTANT
    seq = []
    for name, cfg in ops:
        if cfg.p <= 0:
            continue
        seq.append({
            "hflip": lambda: A.HorizontalFlip(p=cfg.p),
            "vflip": lambda: A.VerticalFlip(p=cfg.p),
            "rotation": lambda: A.Rotate(limit=(-cfg.degrees, cfg.degrees), interpolation=lin, border_mode=const,
                                         fill=0, crop_border=False, p=cfg.p),
            "resized_crop": lambda: A.RandomResizedCrop((h, w), scale=cfg.scale, ratio=cfg.ratio, interpolation=lin,
                                                        p=cfg.p),
            "affine": lambda: A.Affine(scale=cfg.scale, translate_percent=(-cfg.translate, cfg.translate), rotate=0.0,
                                       interpolation=lin, border_mode=const, fill=0, fit_output=False, p=cfg.p),
            "color_jitter": lambda: A.ColorJitter(brightness=(1 - cfg.brightness, 1 + cfg.brightness),
                                                  contrast=(1 - cfg.contrast, 1 + cfg.contrast),
                                                  saturation=(1 - cfg.saturation, 1 + cfg.saturation),
                                                  hue=(0.0, 0.0), p=cfg.p),
            "gaussian_blur": lambda: A.GaussianBlur(blur_limit=(cfg.kernel_size, cfg.kernel_size),
                                                    sigma_limit=cfg.sigma, p=cfg.p),
            "gaussian_noise": lambda: A.GaussNoise(std_range=cfg.std, mean_range=(0.0, 0.0), p=cfg.p),
            "random_erasing": lambda: A.Erasing(scale=cfg.scale, ratio=cfg.ratio, fill=round(cfg.value * 255), p=cfg.p),
        }[name]())
    return A.Compose(seq, seed=0, save_applied_params=save_applied_params)


# --- the timed bodies ---------------------------------------------------------------------------------

def augdag_chunks(p: Params, root: Path, items: list, mapper) -> int:
    """The traditional stage's per-chunk work plus the per-sample lineage its writer computes."""
    size = chunk_kw(p).get("chunk_size", CHUNK)
    chunks = [(p, root, items[i:i + size]) for i in range(0, len(items), size)]
    n = 0
    for result in mapper(trad._chunk, chunks):
        for img, fields in result:
            h, w, c = img.shape
            storage.row(content_hash=storage.content_hash(img), height=h, width=w, channels=c, **fields)
            n += 1
    return n


def augdag_stage(p: Params, root: Path, mapper) -> int:
    return run_stage("traditional", p, root, mapper=mapper, **chunk_kw(p))["samples"]


def torchvision_loop(tf, images: np.ndarray) -> int:
    for img in images:
        out = tf(torch.from_numpy(img).permute(2, 0, 1))
        np.ascontiguousarray(out.permute(1, 2, 0).numpy())
    return len(images)


def albumentations_loop(tf, images: np.ndarray) -> int:
    for img in images:
        tf(image=img)["image"]
    return len(images)


# --- setup --------------------------------------------------------------------------------------------

def parse_case(text: str) -> tuple[int, int, int, int]:
    try:
        shape, n = text.split(":")
        h, w, c = (int(x) for x in shape.lower().split("x"))
        n = int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxWxC:N, e.g. 28x28x1:5000") from None
    if h != w or c not in (1, 3) or n < 10 or n % 10:
        raise argparse.ArgumentTypeError(f"{text!r}: square images, 1 or 3 channels, N a multiple of 10 (10 classes)")
    return h, w, c, n


def prepare(root: Path, size: int, channels: int, n: int, extra: list[str]) -> tuple[Params, list, np.ndarray]:
    """Ingest n Fashion-MNIST train images at size x size x channels, plan one variant each."""
    overrides = dotted_to_nested(list(extra))
    overrides = {**overrides,
                 "ingest": {**overrides.get("ingest", {}), "source": "fashion-mnist", "image_size": size,
                            "channels": channels, "n_per_class": n // 10, "n_val_per_class": 0,
                            "n_test_per_class": 1},
                 "strategy": {"traditional": {"enabled": True, "multiplier": 1},
                              "mix": {"enabled": False}, "generative": {"enabled": False}}}
    p = load_params(REPO / "params.yaml", overrides=overrides)
    run_stage("ingest", p, root)
    run_stage("strategy", p, root)
    plan = load_plan(root, "traditional")
    items = [(pid, k) for pid in plan["parents"] for k in range(plan["multiplier"])]
    raw = storage.StageData(out_dir(root, "ingest"))
    train = raw.manifest[raw.manifest.split == "train"]
    images = np.ascontiguousarray(raw.images(train))
    assert len(images) == len(items) == n, (len(images), len(items), n)
    return p, items, images


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=parse_case, nargs="+", default=[parse_case("28x28x1:5000"),
                                                                    parse_case("224x224x3:500")],
                    help="HxWxC:N, N train images (a multiple of 10; at most 60000) (default: 28x28x1:5000 "
                         "224x224x3:500)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each row; the median is reported")
    ap.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads for every row (default 1)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="augdag rows: chunks through a thread pool of this size (1: plain map); one row per value")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="param override on top of params.yaml, e.g. traditional.ops.gaussian_blur.p=0.5")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    args = ap.parse_args(argv)
    logging.getLogger("augdag").setLevel(logging.WARNING)

    torch.set_num_threads(args.threads)
    try:
        import albumentations
        import cv2

        cv2.setNumThreads(args.threads)
        albu = f"albumentations {albumentations.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)"
    except ImportError:
        albumentations = None
        albu = "albumentations not installed (make bench-setup): its rows are skipped"

    import torchvision

    print(machine_line())
    print(f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads, {torch.get_num_interop_threads()} "
          f"inter-op), torchvision {torchvision.__version__}; {albu}; numpy {np.__version__}; "
          f"malloc {'tuned as the augdag command' if MALLOC_TUNED else 'glibc default'}")
    print(f"median of {args.repeats} repeats (round robin), wall clock; "
          f"ratio = augdag samples/s / baseline samples/s")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="augdag-bench-trad-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for h, w, c, n in args.cases:
            root = work / f"{h}x{w}x{c}-{n}"
            t0 = time.perf_counter()
            p, items, images = prepare(root, h, c, n, args.extra)
            ops = p.traditional.ops
            on = ", ".join(f"{k} p{cfg.p:g}" for k, cfg in ops if cfg.p > 0)
            print(f"\n{h}x{w}x{c}, {n} images ({time.perf_counter() - t0:.1f} s to ingest); ops: {on}; augdag chunks "
                  f"of {chunk_kw(p).get('chunk_size', CHUNK)}")
            bodies, pools = {}, []
            for workers in args.workers:
                pool = ThreadPoolExecutor(workers) if workers > 1 else None
                pools += [pool] if pool else []
                mapper = pool.map if pool else map
                tag = f", {workers} workers" if workers > 1 else ""
                bodies[f"augdag per-chunk fn + lineage{tag}"] = (lambda m=mapper: augdag_chunks(p, root, items, m))
                bodies[f"augdag whole stage (writes){tag}"] = (lambda m=mapper: augdag_stage(p, root, m))
            tv = torchvision_compose(ops, h, w)
            bodies["torchvision v2 Compose loop"] = lambda: torchvision_loop(tv, images)
            if albumentations is not None:
                al = albumentations_compose(ops, h, w)
                al_rec = albumentations_compose(ops, h, w, save_applied_params=True)
                bodies["albumentations Compose loop"] = lambda: albumentations_loop(al, images)
                bodies["albumentations, save_applied_params"] = lambda: albumentations_loop(al_rec, images)
            # warm-up: a few images through every row's code
            small = items[: min(len(items), 20)]
            augdag_chunks(p, root, small, map)
            torchvision_loop(tv, images[:20])
            if albumentations is not None:
                albumentations_loop(al, images[:20])
                albumentations_loop(al_rec, images[:20])
            times = {k: [] for k in bodies}
            for _ in range(args.repeats):
                for name, body in bodies.items():
                    with frozen_heap():
                        t = time.perf_counter()
                        done = body()
                        times[name].append(time.perf_counter() - t)
                    assert done == n, (name, done, n)
            rate = {k: n / median(v) for k, v in times.items()}
            base_tv = rate["torchvision v2 Compose loop"]
            base_al = rate.get("albumentations Compose loop")
            head = (f"{'image':>10} {'N':>6} {'row':<42} {'median s':>9} {'min-max s':>13} {'samples/s':>10} "
                    f"{'vs torchvision':>15} {'vs albumentations':>18}")
            print(head)
            print("-" * len(head))
            for name, ts in times.items():
                is_augdag = name.startswith("augdag")
                r_tv = f"{rate[name] / base_tv:.2f}x" if is_augdag else ""
                r_al = f"{rate[name] / base_al:.2f}x" if is_augdag and base_al else ""
                print(f"{f'{h}x{w}x{c}':>10} {n:>6} {name:<42} {median(ts):>9.3f} {spread(ts):>13} {rate[name]:>10.0f} "
                      f"{r_tv:>15} {r_al:>18}", flush=True)
            for pool in pools:
                pool.shutdown()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
