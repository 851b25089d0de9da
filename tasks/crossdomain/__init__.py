"""Cross-domain branch: unpaired translation of the labelled train split into a target domain (CycleGAN).

A pair of generators, G: source -> target and F: target -> source, with a PatchGAN discriminator per domain,
trains here without pairs on the raw train images and the unlabelled images of `crossdomain.target`
(augdag/cyclegan.py). Each raw train image a is then translated: the sample is G(a), with a's label and a
as its parent; its cycle reconstruction F(G(a)) is stored beside it (cycle/, same shard layout) for the gate,
which compares it with a (a translation differs from its source by design). The checkpoint is part of the
output (safetensors, DVC-tracked) and its sha256 is in every sample's lineage, so replay is exact.

The target folder lives outside the project, so DVC does not see its files change: the summary records
their count and a digest of their bytes (change the folder, then `dvc repro --force crossdomain`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from augdag import cyclegan, device
from augdag.data import load_image, scan_images
from augdag.errors import LineageError, ModelError
from augdag.layout import cycle_dir
from augdag.log import Progress, logger
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import StageData, StageWriter, atomic_dir, content_hash, write_json
from augdag.tasks import out_dir
from augdag.tasks.strategy import load_plan

BRANCH = "crossdomain"
CHECKPOINT = "cyclegan.safetensors"
RECONSTRUCTION = json.dumps({"translation": "F(G)"})


def metrics_path(root: Path) -> Path:
    return Path(root) / "data" / "metrics" / "crossdomain.json"


def sample_id(parent_id: str) -> str:
    return f"{parent_id}~xd"


def target_files(folder: str, limit: int, seed: int) -> list[Path]:
    """The target folder's image files, at most `limit` of them: above it, the ones of lowest
    derive_seed(seed, 'crossdomain-target', relative path), so the choice depends on the names only."""
    files = scan_images(folder, "crossdomain.target folder")
    if len(files) > limit:
        root = Path(folder)
        keys = [derive_seed(seed, "crossdomain-target", f.relative_to(root).as_posix()) for f in files]
        keep = set(np.argsort(np.array(keys, dtype=np.uint64), kind="stable")[:limit].tolist())
        files = [f for i, f in enumerate(files) if i in keep]
    return files


def read_target(p: Params) -> tuple[np.ndarray, str]:
    """(the target images at the raw data's size and channels, a sha256 over their decoded bytes in file order)."""
    ip = p.ingest
    files = target_files(p.crossdomain.target, p.crossdomain.max_target_images, p.seed)
    images = np.stack([load_image(f, ip.image_size, ip.channels, ip.max_image_pixels) for f in files])
    return images, hashlib.sha256(images.tobytes()).hexdigest()


def psnr_ssim(a: np.ndarray, b: np.ndarray) -> dict:
    from augdag import imquality

    if not len(a):
        return {}
    return {"cycle_psnr": round(float(np.mean(imquality.psnr_batch(b, a))), 4),
            "cycle_ssim": round(float(np.mean(imquality.ssim_batch(b, a))), 4)}


def run(p: Params, root: Path, **_) -> dict:
    plan = load_plan(root, BRANCH)
    log = logger()
    metrics_path(root).parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir(root, BRANCH)) as tmp:
        w = StageWriter(tmp, p.ingest.shard_size)
        summary: dict = {"enabled": plan["enabled"], "samples": 0}
        if plan["enabled"] and plan["multiplier"] > 0:
            dev = device.for_stage(p, BRANCH)
            cycle = StageWriter(tmp / cycle_dir(root).name, p.ingest.shard_size)
            raw = StageData(out_dir(root, "ingest"))
            train = raw.manifest[raw.manifest.split == "train"]
            images = raw.images(train)
            target, target_digest = read_target(p)
            cfg = p.crossdomain.model
            log.info("crossdomain: training a CycleGAN on %d source and %d target images, %d steps", len(images),
                     len(target), cfg.steps)
            every = max(1, cfg.steps // 10)

            def progress(step, total, losses):
                if step % every == 0 or step == total:
                    log.info("crossdomain: step %d/%d %s", step, total, losses)

            t0, seed = time.monotonic(), derive_seed(p.seed, BRANCH, "train")
            state, meta = cyclegan.train_cyclegan(images, target, cfg, seed,
                                                  progress=progress, device=dev)
            # a time is logged, never written to the outputs: their bytes must repeat run to run
            log.info("crossdomain: CycleGAN trained in %.1f s", time.monotonic() - t0)
            digest = cyclegan.save_cyclegan(state, meta, tmp / CHECKPOINT)
            model = cyclegan.load_cyclegan(tmp / CHECKPOINT).to(dev)
            bar = Progress(BRANCH, len(train))
            recs: list[np.ndarray] = []  # the first batches' reconstructions, for the summary's cycle figures
            step = 256
            for s in range(0, len(train), step):
                part = train.iloc[s:s + step]
                fake, rec = model.translate(images[s:s + step])
                for (sid, label), f, r in zip(zip(part.sample_id, part.label), fake, rec):
                    fields = dict(split="train", branch=BRANCH, label=int(label), parent_ids=[sid],
                                  source=f"cyclegan:{digest[:16]}", op_params=json.dumps({"translation": "G"}),
                                  seed=seed, generator_hash=digest)
                    w.add(f, sample_id=sample_id(sid), **fields)
                    cycle.add(r, sample_id=sample_id(sid), **{**fields, "op_params": RECONSTRUCTION})
                if len(recs) < 16:  # the gate scores every sample; these figures are the branch's at a glance
                    recs.append(rec)
                bar.update(len(part))
            w.close(frame=False)
            cycle.close(frame=False)
            summary = {"enabled": True, "samples": w.count, "generator_hash": digest, "target_images": len(target),
                       "target_digest": target_digest,
                       "losses": meta.get("final_losses", {}),
                       **psnr_ssim(images[:sum(len(r) for r in recs)], np.concatenate(recs)),
                       **device.describe(dev)}
            log.info("crossdomain: %d samples; %s", w.count, json.dumps({k: summary[k] for k in summary
                                                                           if k.startswith("cycle_")}))
        else:
            w.close()
        write_json(tmp / "summary.json", summary)
    write_json(metrics_path(root), {k: v for k, v in summary.items() if k not in ("losses",)})
    return summary


def _replay_device(root: Path):
    from augdag.storage import try_read_json

    return device.for_replay((try_read_json(out_dir(root, BRANCH) / "summary.json") or {}).get("device"), BRANCH)


def load_checked(root: Path, digest: str, sample: str):
    """The branch's checkpoint, after checking it is the one `sample` was translated with."""
    ckpt = out_dir(root, BRANCH) / CHECKPOINT
    if not ckpt.exists():
        raise ModelError(f"{ckpt}: checkpoint not found (run the crossdomain stage)")
    if cyclegan.file_hash(ckpt) != digest:
        raise LineageError(f"{ckpt}: checkpoint hash differs from the one {sample} was translated with")
    return cyclegan.load_cyclegan(ckpt).to(_replay_device(root))


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """The sample translated again from its parent with the checkpoint it was made with; its cycle reconstruction
    too, compared with the stored one."""
    from augdag.tasks import find

    model = load_checked(root, r["generator_hash"], r["sample_id"])
    raw = StageData(out_dir(root, "ingest"))
    parent = raw.image(find(root, r["parent_ids"][0])[1])
    fake, rec = model.translate(parent[None])
    stored = StageData(cycle_dir(root), manifest=False).image(r)
    return {"replayed_hash": content_hash(fake[0]), "reconstruction_match": content_hash(rec[0]) ==
            content_hash(stored)}
