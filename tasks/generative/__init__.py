"""Generative branch: a class-conditional generator trained on the train split, then sampled.

Per class, `strategy.generative.multiplier` x (train images of that class) samples are drawn, each
from its own latent seed = seed(global seed, 'generative', class, i). The checkpoint is part of the
stage output (DVC-tracked) and its sha256 is in every sample's lineage, so replay is exact.

What the branch produced is measured here: how often a reference classifier (a linear probe on the
pretrained backbone's features, trained on the real train split) agrees with the intended label,
and the Fréchet distance between generated and held-out real (val) samples in that feature space,
beside the real-train-vs-real-val distance as the floor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from augdag import device
from augdag import generative as gen
from augdag.errors import ModelError
from augdag.layout import classes
from augdag.log import Progress, logger
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import MANIFEST, StageData, StageWriter, atomic_dir, write_json
from augdag.tasks import out_dir
from augdag.tasks.strategy import load_plan

BRANCH = "generative"
CHECKPOINT = "generator.safetensors"


def metrics_path(root: Path) -> Path:
    return Path(root) / "data" / "metrics" / "generative.json"


def sample_id(label: int, i: int) -> str:
    return f"gen-c{label}-{i:05d}"


QUALITY_SAMPLE = 10_000
SCORED_COLUMNS = ("sample_id", "label", "shard", "index", "height", "width", "channels")


def spread(n: int, k: int = QUALITY_SAMPLE) -> np.ndarray:
    """All of range(n) if n <= k, else k evenly spaced indices (deterministic)."""
    return np.arange(n) if n <= k else np.linspace(0, n - 1, k).round().astype(np.int64)


def produced_quality(real_train, train_labels, real_val, val_labels, generated, gen_labels, n_classes,
                     dev="cpu") -> dict:
    """Label agreement of a reference probe, and Fréchet distances in the backbone's feature space."""
    from augdag.features import Embedder, LinearProbe, frechet_distance

    emb = Embedder(image_size=64, device=dev)
    f_train, f_val, f_gen = emb(real_train), emb(real_val), emb(generated)
    probe = LinearProbe(n_classes).fit(f_train, train_labels)
    out = {"label_agreement": round(float((probe.predict_proba(f_gen).argmax(1) == gen_labels).mean()), 6)}
    if len(f_val):  # no val split (ingest.n_val_per_class 0): no figure, rather than NaN in a metrics file
        out["reference_val_accuracy"] = round(float((probe.predict_proba(f_val).argmax(1) == val_labels).mean()), 6)
    if len(f_val) >= 2 and len(f_gen) >= 2:
        out["frechet_generated_vs_val"] = round(frechet_distance(f_gen, f_val), 4)
        out["frechet_train_vs_val_floor"] = round(frechet_distance(f_train, f_val), 4)
    return out


# samples per sampling job (a shard task on Dask)
JOB_SAMPLES = 4096
_GENERATORS: dict = {}  # (checkpoint, digest, device) -> loaded generator: one per worker process


def sampling_jobs(counts: list[int]) -> list[list[tuple[int, int, int]]]:
    """The (class, i) pairs of `counts[c]` samples per class, in class order, cut into jobs of JOB_SAMPLES; a job
    is a few (class, first i, end i) segments, so the plan stays small whatever the sample count."""
    jobs: list = []
    cur: list = []
    room = JOB_SAMPLES
    for c, n in enumerate(counts):
        i = 0
        while i < n:
            take = min(room, n - i)
            cur.append((c, i, i + take))
            i, room = i + take, room - take
            if room == 0:
                jobs.append(cur)
                cur, room = [], JOB_SAMPLES
    return jobs + ([cur] if cur else [])


def _sample(g, seed: int, segments) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
    pairs = [(c, i) for c, a, b in segments for i in range(a, b)]
    seeds = [derive_seed(seed, BRANCH, c, i) for c, i in pairs]
    return g.sample_batch([c for c, _ in pairs], seeds), pairs, seeds


def sample_job(args) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
    """(images, (class, i) pairs, latent seeds) of one sampling job, from the checkpoint at its path (checked
    against its hash once per process). Each image's bytes are sample(label, seed)'s whatever the batch
    (Generator.sample_batch), so jobs may run anywhere; the thread count is the stage's, as sample_batch's batch
    check is made at it, and Dask's workers start with one."""
    ckpt, digest, dev, threads, seed, segments = args
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    key = (ckpt, digest, dev)
    g = _GENERATORS.get(key)
    if g is None:
        if gen.file_hash(ckpt) != digest:
            raise ModelError(f"{ckpt}: checkpoint hash differs from the one this run trained or loaded")
        _GENERATORS.clear()
        g = _GENERATORS[key] = gen.load_generator(ckpt).to(dev)
    return _sample(g, seed, segments)


def run(p: Params, root: Path, mapper=map, **_) -> dict:
    plan = load_plan(root, BRANCH)
    gp = p.generative
    log = logger()
    dev = device.for_stage(p, BRANCH)
    metrics_path(root).parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir(root, BRANCH)) as tmp:
        w = StageWriter(tmp, p.ingest.shard_size)
        summary: dict = {"enabled": plan["enabled"], "samples": 0}
        if plan["enabled"]:
            raw = StageData(out_dir(root, "ingest"))
            train = raw.manifest[raw.manifest.split == "train"]
            images, labels = raw.images(train), train.label.to_numpy(dtype=np.int64)
            n_classes = len(classes(root))
            extra: dict = {}
            if gp.backend == "diffusers":
                from augdag.diffusion import load_diffusion

                if gp.diffusers.device is not None:
                    dev = device.resolve(gp.diffusers.device, "generative.diffusers.device")
                generator = load_diffusion(gp.diffusers.path, inference_steps=gp.diffusers.inference_steps,
                                           device=dev)
                if generator.n_classes != n_classes or generator.image_shape != images.shape[1:]:
                    raise ModelError(f"{gp.diffusers.path}: diffusion model makes {generator.image_shape} images of "
                                     f"{generator.n_classes} classes; "
                                     f"the dataset has {images.shape[1:]} and {n_classes}")
                digest = generator.digest
                extra = {"backend": "diffusers", "model_path": str(Path(gp.diffusers.path).resolve()),
                         "inference_steps": gp.diffusers.inference_steps}
            elif gp.checkpoint:
                generator = gen.load_generator(gp.checkpoint).to(dev)
                if generator.n_classes != n_classes or generator.image_shape != images.shape[1:]:
                    raise ModelError(f"{gp.checkpoint}: generator makes {generator.image_shape} images of "
                                     f"{generator.n_classes} classes; "
                                     f"the dataset has {images.shape[1:]} and {n_classes}")
                shutil.copyfile(gp.checkpoint, tmp / CHECKPOINT)
                digest = gen.file_hash(tmp / CHECKPOINT)
            else:
                log.info("generative: training on %d images, %d classes", len(images), n_classes)
                every = max(1, gp.model.steps // 10)

                def progress(step, total, loss):
                    if step % every == 0 or step == total:
                        log.info("generative: step %d/%d loss %.4f", step, total, loss)

                state, meta = gen.train_generator(images, labels, n_classes, gp.model,
                                                  derive_seed(p.seed, BRANCH, "train"), progress=progress,
                                                  device=dev)
                digest = gen.save_generator(state, meta, tmp / CHECKPOINT)
                generator = gen.load_generator(tmp / CHECKPOINT).to(dev)
            jobs = sampling_jobs([plan["multiplier"] * int((labels == c).sum()) for c in range(n_classes)])
            # Sampling jobs go to the run's Dask workers where there are some (each loads the checkpoint once); a
            # diffusion model, and a run without workers, samples here, one job after another.
            if gp.backend == "diffusers" or not getattr(mapper, "distributed", False):
                results = (_sample(generator, p.seed, job) for job in jobs)
            else:
                results = mapper(sample_job, [(str(tmp / CHECKPOINT), digest, str(dev), torch.get_num_threads(),
                                               p.seed, job) for job in jobs])
            progress = Progress(BRANCH, sum(b - a for job in jobs for _, a, b in job))
            for images_out, pairs, seeds in results:
                for (c, i), s, img in zip(pairs, seeds, images_out):
                    w.add(img, sample_id=sample_id(c, i), split="train", branch=BRANCH, label=c, parent_ids=[],
                          source=f"generator:{digest[:16]}",
                          op_params=json.dumps({"latent_seed": s, "label": c, **extra}),
                          seed=s, generator_hash=digest)
                progress.update(len(pairs))
            w.close(frame=False)
            val = raw.manifest[raw.manifest.split == "val"]
            # The scores are estimates: at most QUALITY_SAMPLE evenly spaced images of each set (memory and time
            # bounded whatever the multiplier; every image below that size). Only those rows are read back.
            t, g = spread(len(images)), spread(w.count)
            picked = pq.read_table(tmp / MANIFEST, columns=list(SCORED_COLUMNS)).take(g).to_pandas()
            quality = produced_quality(images[t], labels[t], raw.images(val), val.label.to_numpy(dtype=np.int64),
                                       StageData(tmp, manifest=False).images(picked),
                                       picked.label.to_numpy(dtype=np.int64), n_classes, dev)
            if len(g) < w.count or len(t) < len(images):
                quality["scored_on"] = {"train": len(t), "generated": len(g)}
            summary = {"enabled": True, "samples": w.count, "generator_hash": digest, **quality,
                       **device.describe(dev)}
            log.info("generative: %s", json.dumps(quality))
        else:
            w.close()
        write_json(tmp / "summary.json", summary)
    write_json(metrics_path(root), summary)
    return summary


def _replay_device(root: Path):
    from augdag.storage import try_read_json

    return device.for_replay((try_read_json(out_dir(root, BRANCH) / "summary.json") or {}).get("device"), BRANCH)


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """The sample drawn again from the checkpoint (or diffusion model) it was drawn with, after checking its hash."""
    from augdag.errors import LineageError
    from augdag.storage import content_hash

    if r["op_params"].get("backend") == "diffusers":
        from augdag.diffusion import load_diffusion

        q = r["op_params"]
        g = load_diffusion(q["model_path"], inference_steps=int(q["inference_steps"]), device=_replay_device(root))
        if g.digest != r["generator_hash"]:
            raise LineageError(f"{q['model_path']}: diffusion model hash differs from the one {r['sample_id']} was "
                               "drawn with")
        return {"replayed_hash": content_hash(g.sample(int(r["label"]), int(q["latent_seed"])))}
    ckpt = out_dir(root, "generative") / "generator.safetensors"
    if gen.file_hash(ckpt) != r["generator_hash"]:
        raise LineageError(f"{ckpt}: checkpoint hash differs from the one {r['sample_id']} was drawn with")
    g = gen.load_generator(ckpt).to(_replay_device(root))
    return {"replayed_hash": content_hash(g.sample(int(r["label"]), int(r["op_params"]["latent_seed"])))}
