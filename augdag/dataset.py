"""A stage's samples as a torch Dataset (what `augdag.open_project(...).stage(name).dataset()` returns)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
import torch

from augdag.errors import AugdagError
from augdag.storage import StageData, hard_label, sample_weights

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

LabelFormat = Literal["auto", "index", "soft"]


class StageDataset(torch.utils.data.Dataset):
    """A stage's samples, read from its shards. Item i is a tuple (sample, label, weight, sample_id):

    - sample: the image as a C x H x W uint8 tensor (through `transform` if given: e.g. a torchvision v2
      transform), or the text for a text run;
    - label: with labels="index" the class index (a mixed sample's largest soft-label class); with "soft" a
      float32 vector over the classes (one-hot for a hard label); "auto" is "soft" when any row of the set
      has a soft label, so every item of a batch has the same type;
    - weight: the sampling weight (merge's; 1.0 where the stage has none);
    - sample_id: the row's id, for lineage.

    It keeps only the manifest's columns it needs and opens the shards in each worker process, so it works
    with DataLoader(num_workers > 0).
    """

    COLUMNS = ("sample_id", "label", "shard", "index", "height", "width", "channels")

    def __init__(self, folder: Path, manifest: "pd.DataFrame", n_classes: int, transform: Callable | None = None,
                 labels: LabelFormat = "auto"):
        if labels not in ("auto", "index", "soft"):
            raise AugdagError(f"labels must be auto, index or soft, not {labels!r}")
        self.folder, self.transform, self.n_classes = Path(folder), transform, n_classes
        self.rows = {c: manifest[c].to_numpy() for c in self.COLUMNS if c in manifest}
        self.texts = manifest["text"].to_numpy() if "text" in manifest and manifest["text"].notna().any() else None
        self.soft = [None if s is None or (isinstance(s, float) and s != s) else np.asarray(s, np.float32)
                     for s in manifest["soft_label"]]
        self.weight = sample_weights(manifest["weight"])
        self._data: StageData | None = None
        self.labels = ("soft" if any(s is not None for s in self.soft) else "index") if labels == "auto" else labels

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}  # memory maps stay in the process that opened them

    def __len__(self) -> int:
        return len(self.rows["sample_id"])

    def _label(self, i: int):
        soft = self.soft[i]
        if self.labels == "index":
            return hard_label(soft, self.rows["label"][i])
        if soft is None:
            soft = np.zeros(self.n_classes, np.float32)
            soft[int(self.rows["label"][i])] = 1.0
        return torch.from_numpy(np.array(soft, np.float32))

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = int(i) % len(self)
        if self.texts is not None:
            sample = self.texts[i]
        else:
            if self._data is None:  # opened once per process (a worker gets the dataset without it)
                self._data = StageData.shared(self.folder)
            row = {c: v[i] for c, v in self.rows.items()}
            image = np.array(self._data.image(row))  # a copy: the shard is mapped read-only
            sample = torch.from_numpy(image).permute(2, 0, 1)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, self._label(i), float(self.weight[i]), str(self.rows["sample_id"][i])
