"""The report on audio (params `modality: audio`): the image report on the spectrograms, plus a section of clips
to listen to beside their spectrograms (sections/audio.html.j2): traditional variants with their source and
ops, and Mixup/CutMix samples with their two parents and a Griffin-Lim rendering of the mixed spectrogram (an
approximation: a mixed sample exists only as a spectrogram). Sound is embedded as data: WAV, so the page stays
self-contained."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from augdag.audio import features
from augdag.audio.data import to_int16
from augdag.audio.params import FeatureParams
from augdag.audio.store import waves
from augdag.params import Params
from augdag.storage import StageData, try_read_json
from augdag.tasks import out_dir
from augdag.tasks.report import figures, sections
from augdag.tasks.report import run as image_run

SHOWN = 4  # clips of each branch in the section (a second of 16 kHz audio is ~43 KB of base64)


def _wav(wave, rate: int) -> str:
    return "data:audio/wav;base64," + base64.b64encode(features.wav_bytes(wave, rate)).decode()


def _ops(record: list[dict]) -> str:
    parts = []
    for op in record:
        args = ", ".join(f"{k} {v}" for k, v in op.items() if k not in ("op", "seed"))
        parts.append(f"{op['op']} ({args})" if args else op["op"])
    return "; ".join(parts) or "none drawn"


def clips(root: Path, feats: FeatureParams, linked: frozenset) -> dict | sections.Missing:
    ingest = out_dir(root, "ingest")
    summary = try_read_json(ingest / "summary.json")
    if summary is None:
        return sections.Missing("run the ingest stage")
    rate = int(summary.get("sample_rate", feats.sample_rate))
    raw = StageData(ingest)
    cols = ["sample_id", "shard", "index", "height", "width", "channels"]

    def parent(pid: str) -> dict:
        where = raw.lookup([pid], cols)
        row = {c: v[0] for c, v in where.items()}
        return {"id": pid, "clip": _wav(waves(ingest, [row])[0], rate),
                "spec": figures.png(raw.images_of(where)[0])}

    out: dict = {"rate": rate, "seconds": f"{int(summary.get('clip_samples', feats.clip_samples)) / rate:.3f}",
                 "branches": {"traditional": [], "mix": []}}
    for branch in ("traditional", "mix"):
        folder = out_dir(root, branch)
        if try_read_json(folder / "summary.json") is None:
            continue
        data = StageData(folder)
        rows = data.manifest.head(SHOWN)
        gate = sections._gate_of(root, branch)
        images = data.images(rows) if len(rows) else []
        own = waves(folder, rows) if branch == "traditional" and len(rows) else [None] * len(rows)
        for r, image, wave in zip(rows.to_dict("records"), images, own):
            decision, reason, sc = gate.get(r["sample_id"], (None, "", {}))
            rec = json.loads(r["op_params"] or "{}")
            item = {"id": r["sample_id"], "linked": r["sample_id"] in linked, "spec": figures.png(image),
                    "parents": [parent(pid) for pid in r["parent_ids"]],
                    "scores": ", ".join(f"{k} {sections._num(v)}" for k, v in sorted(sc.items())) or "–",
                    "gate": "not gated" if decision is None else decision + (f": {reason}" if reason else "")}
            if branch == "traditional":
                item["ops"], item["clip"] = _ops(rec.get("ops", [])), _wav(wave, rate)
            else:
                item["ops"] = ", ".join(f"{k} {v if isinstance(v, str) else sections._num(v)}" for k, v in rec.items()
                                        if k in ("op", "lam"))
                item["clip"] = _wav(to_int16(features.invert(image, feats)), rate)
            out["branches"][branch].append(item)
    return out


def run(p: Params, root: Path, **_) -> dict:
    return image_run(p, Path(root), extra=[("audio", "Clips", clips, Path(root), p.audio.features)])
