"""Hostile files (issue 9): links and `..` paths in a dataset folder that lead outside it, a FIFO posing
as an image, decompression bombs, and a pickle payload in every kind of model, generator, weight, shard
and params file augdag reads. None is followed, decoded past the limit, or executed: each is refused
with the project's error naming the file, and the payload's marker file is never created.

The payload is real: `test_the_payload_is_live` shows that unpickling it does create its marker.
"""

import inspect
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augdag.data import load_image, scan_folder
from augdag.errors import DataError, ModelError, ParamsError
from helpers import REPO, image_folder


@pytest.fixture(autouse=True)
def no_hang():
    def fire(*_):
        raise TimeoutError("hung for 120 s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------- links and `..` paths

def _secret(tmp_path: Path, src: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    secret = outside / "secret.png"
    secret.write_bytes((src / "circle" / "img01.png").read_bytes())
    return secret


LINKS = {
    "relative ../ link to a file outside": lambda src, secret: (src / "circle" / "a.png",
                                                                 os.path.relpath(secret, src / "circle")),
    "link whose target climbs out through a subfolder": lambda src, secret: (
        src / "circle" / "b.png", "../square/../../outside/secret.png"),
    "chain: link to a link inside that leads outside": lambda src, secret: (src / "circle" / "c.png", "d.png"),
    "absolute link to a system file": lambda src, secret: (src / "circle" / "e.png", "/etc/passwd"),
    "class folder that is a link outside": lambda src, secret: (src / "zzz", str(secret.parent)),
}


@pytest.mark.parametrize("case", sorted(LINKS))
def test_links_leading_outside_the_dataset_are_refused(tmp_path, case):
    src = image_folder(tmp_path / "ds", per_class=4)
    secret = _secret(tmp_path, src)
    link, target = LINKS[case](src, secret)
    link.symlink_to(target)
    if case.startswith("chain"):
        (src / "circle" / "d.png").symlink_to(os.path.relpath(secret, src / "circle"))
    with pytest.raises(DataError, match="pointing outside") as err:
        scan_folder(src)
    assert str(src) in str(err.value)


def test_a_linked_folder_inside_a_class_is_not_followed(tmp_path):
    src = image_folder(tmp_path / "ds", per_class=4)
    secret = _secret(tmp_path, src)
    (src / "circle" / "more").symlink_to(secret.parent, target_is_directory=True)
    _, files = scan_folder(src)
    real = src.resolve()
    assert all(p.resolve().is_relative_to(real) for p, _ in files), "nothing read from outside"
    assert not any("secret" in p.name for p, _ in files)


def test_a_fifo_or_a_dangling_link_posing_as_an_image_is_refused_without_blocking(tmp_path):
    src = image_folder(tmp_path / "ds", per_class=4)
    fifo = src / "circle" / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    with pytest.raises(DataError, match=f"{fifo}: not a regular file"):
        scan_folder(src)
    fifo.unlink()
    dangling = src / "circle" / "gone.png"
    dangling.symlink_to("nothing-here.png")
    with pytest.raises(DataError, match=f"{dangling}: not a regular file"):
        scan_folder(src)


def test_ingest_and_extra_sources_refuse_an_outside_link_and_keep_the_last_output(tmp_path):
    from augdag.params import parse_params
    from augdag.storage import StageWriter
    from augdag.tasks import ingest
    from augdag.tasks.merge import extra_source

    src = image_folder(tmp_path / "ds", per_class=4)
    proj = tmp_path / "proj"
    p = parse_params({"ingest": {"source": str(src), "n_per_class": 2, "n_val_per_class": 1,
                                 "n_test_per_class": 1, "image_size": 16}})
    w = StageWriter(proj / "data" / "ingest")  # the last good output
    w.add(np.zeros((16, 16, 1), np.uint8), sample_id="old", split="train", branch="raw", label=0, parent_ids=[])
    w.close()
    before = (proj / "data" / "ingest" / "manifest.parquet").read_bytes()
    secret = _secret(tmp_path, src)
    extra = image_folder(tmp_path / "extra", classes=("circle",), per_class=2)
    for folder in (src, extra):
        (folder / "circle" / "zz.png").symlink_to(os.path.relpath(secret, folder / "circle"))
    with pytest.raises(DataError, match="pointing outside"):
        ingest.run(p, proj)
    with pytest.raises(DataError, match="pointing outside"):
        extra_source("web", str(extra), p, ["bar", "circle", "square"])
    assert (proj / "data" / "ingest" / "manifest.parquet").read_bytes() == before
    assert not list((proj / "data").glob(".ingest.*")), "nothing half-written"


# ------------------------------------------------------------------------------ decompression bombs

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, idat: bytes = b"") -> bytes:
    """A grey PNG whose header claims width x height; its IDAT holds `idat` (default: almost nothing), so
    decoding it would fail with "truncated": a refusal that names the size shows nothing was decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat or zlib.compress(b"\0" * 16))
            + _chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="JPEG")
    raw = bytearray(buf.getvalue())
    i = raw.index(b"\xff\xc0")  # baseline SOF0: length (2), precision (1), height (2), width (2)
    raw[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


BOMBS = {  # name: (file bytes, suffix, ingest.max_image_pixels, expected message)
    "PNG claiming 100000 x 100000 (beyond Pillow's own limit)": (png_claiming(100_000, 100_000), ".png",
                                                                 50_000_000, "decompression bomb"),
    "PNG claiming 8000 x 8000 (over max_image_pixels, under Pillow's)": (png_claiming(8000, 8000), ".png",
                                                                         50_000_000, "exceeds ingest.max_image_pixels"),
    "PNG claiming 20000 x 20000 with max_image_pixels raised to 1e12": (png_claiming(20_000, 20_000), ".png",
                                                                        10**12, "decompression bomb"),
    "JPEG claiming 65000 x 65000": (jpeg_claiming(65_000, 65_000), ".jpg", 50_000_000, "decompression bomb"),
    "JPEG claiming 9000 x 9000 (over max_image_pixels)": (jpeg_claiming(9000, 9000), ".jpg", 50_000_000,
                                                          "exceeds ingest.max_image_pixels"),
    "real zlib bomb: 6000 x 6000 of zeros in 35 kB, max_image_pixels 1e6": (
        png_claiming(6000, 6000, zlib.compress(b"\0" * (6001 * 6000), 9)), ".png", 1_000_000,
        "exceeds ingest.max_image_pixels"),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_decompression_bombs_are_refused_from_the_header(tmp_path, case):
    data, suffix, limit, message = BOMBS[case]
    f = tmp_path / f"bomb{suffix}"
    f.write_bytes(data)
    with pytest.raises(DataError, match=message) as err:
        load_image(f, 16, 1, limit)
    assert str(f) in str(err.value) and "truncated" not in str(err.value), "refused before decoding"


def test_a_bomb_in_a_dataset_stops_ingest_naming_it(tmp_path):
    from augdag.params import parse_params
    from augdag.tasks import ingest

    src = image_folder(tmp_path / "ds", per_class=4)
    bomb = src / "square" / "bomb.png"
    bomb.write_bytes(png_claiming(100_000, 100_000))
    p = parse_params({"ingest": {"source": str(src), "n_per_class": 2, "n_val_per_class": 1,
                                 "n_test_per_class": 1, "image_size": 16}})
    with pytest.raises(DataError, match=f"{bomb}: refused as a decompression bomb"):
        ingest.run(p, tmp_path / "proj")
    assert not (tmp_path / "proj" / "data" / "ingest").exists()


# ------------------------------------------------------------------------------ pickle payloads

class Payload:
    """Unpickling this writes `marker` (through exec, as a real exploit would run any code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.fixture
def payload(tmp_path):
    """(marker path, raw pickle bytes, a torch.save zip archive holding the payload in its data.pkl)."""
    import torch

    marker = tmp_path / "PWNED"
    raw = pickle.dumps({"weight": Payload(marker)}, protocol=2)
    buf = io.BytesIO()
    torch.save({"netG_state_dict": {"main.0.weight": Payload(marker)}, "model": Payload(marker)}, buf)
    assert not marker.exists()
    yield marker, raw, buf.getvalue()
    assert not marker.exists(), "the pickle payload was executed"


def test_the_payload_is_live(tmp_path, payload):
    """Unpickled with plain pickle (in another process), the payload runs: the refusals below are real."""
    f = tmp_path / "p.pkl"
    f.write_bytes(pickle.dumps({"weight": Payload(tmp_path / "LIVE")}, protocol=2))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(f)!r}, 'rb'))"], check=True)
    assert (tmp_path / "LIVE").read_text() == "pwned"


@pytest.mark.parametrize("name, content", [("w.pt", "raw"), ("w.pth", "zip"), ("w.pt", "zip"),
                                           ("w.safetensors", "raw"), ("w.bin", "zip")])
def test_weight_files_with_a_pickle_payload_are_refused(tmp_path, payload, name, content):
    from augdag.models import load_state_dict_file

    marker, raw, archive = payload
    f = tmp_path / name
    f.write_bytes(raw if content == "raw" else archive)
    with pytest.raises(ModelError, match=str(f).replace(".", r"\.")) as err:
        load_state_dict_file(f)
    assert "refused" in str(err.value) or "not a readable" in str(err.value) or "not allowed" in str(err.value)


@pytest.mark.parametrize("name, content", [("g.pt", "zip"), ("g.safetensors", "raw"), ("g.safetensors", "zip")])
def test_generator_checkpoints_with_a_pickle_payload_are_refused(tmp_path, payload, name, content):
    from augdag.generative import load_generator

    marker, raw, archive = payload
    f = tmp_path / name
    f.write_bytes(raw if content == "raw" else archive)
    with pytest.raises(ModelError, match=f"{f}: "):
        load_generator(f)


@pytest.mark.parametrize("content", ["raw", "zip"])
def test_the_pretrained_dcgan_loader_refuses_a_pickle_payload(tmp_path, payload, content):
    from augdag.generative import load_pretrained_dcgan

    marker, raw, archive = payload
    f = tmp_path / "weights.tar"
    f.write_bytes(raw if content == "raw" else archive)
    with pytest.raises(ModelError, match=f"{f}: (refused|not a readable)"):
        load_pretrained_dcgan(f)


def test_a_diffusion_folder_with_pickled_weights_only_is_refused(tmp_path, payload):
    from augdag.diffusion import build_tiny, load_diffusion

    marker, raw, archive = payload
    model = build_tiny(tmp_path / "model", channels=1, size=8, n_classes=2)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(tmp_path / "kept.safetensors")
    (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(archive)
    with pytest.raises(ModelError, match="pickled files are never loaded"):
        load_diffusion(model, inference_steps=1)
    # With the safetensors weights back, the .bin beside them is ignored: loads, payload never touched.
    (tmp_path / "kept.safetensors").rename(weights)
    g = load_diffusion(model, inference_steps=1)
    assert g.n_classes == 2


def test_a_diffusion_config_claiming_a_huge_unet_is_refused_before_building_it(tmp_path):
    from augdag.diffusion import build_tiny, load_diffusion

    model = build_tiny(tmp_path / "model", channels=1, size=8, n_classes=2)
    cfg_file = model / "unet" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["block_out_channels"] = [65536, 65536]  # ~10^12 parameters: building it would exhaust memory
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="refused before building it"):
        load_diffusion(model, inference_steps=1)


def test_the_evaluate_stage_refuses_a_model_file_holding_a_pickle(tmp_path, payload):
    from augdag.params import parse_params
    from augdag.storage import write_json
    from augdag.tasks import evaluate

    marker, raw, archive = payload
    write_json(tmp_path / "data" / "ingest" / "classes.json", {"classes": ["a", "b"]})
    f = tmp_path / "data" / "finetune" / "model.safetensors"
    f.parent.mkdir(parents=True)
    f.write_bytes(archive)
    with pytest.raises(ModelError, match=f"{f}: not a readable safetensors model file"):
        evaluate.run(parse_params({"finetune": {"pretrained": False}}), tmp_path)


def test_an_image_shard_holding_a_pickle_is_refused(tmp_path, payload):
    from augdag.storage import StageData, StageWriter

    marker, raw, archive = payload
    w = StageWriter(tmp_path, shard_size=4)
    w.add(np.zeros((2, 2, 1), np.uint8), sample_id="s0", split="train", branch="raw", label=0, parent_ids=[])
    w.close()
    shard = tmp_path / "shards" / "shard-00000.npy"
    np.save(shard, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    data = StageData(tmp_path)
    with pytest.raises(DataError, match=f"{shard}: not a readable image shard"):
        data.images(data.manifest)


def test_yaml_tags_that_would_run_code_are_refused(tmp_path, payload):
    from augdag.params import dotted_to_nested, load_params

    marker, _, _ = payload
    f = tmp_path / "params.yaml"
    f.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ParamsError, match=f"{f}: not valid YAML"):
        load_params(f)
    with pytest.raises(ParamsError, match="override"):
        dotted_to_nested([f"seed=!!python/object/apply:os.system ['touch {marker}']"])


# --------------------------------------------------------------------------------------- servers

def test_servers_bind_loopback_unless_exposed_and_readme_says_what_exposing_means():
    """The refusal itself and a real server's sockets are tested in tests/test_serve.py (and the server
    that tests/test_faults.py restarts); here: every default is the loopback address."""
    from augdag import cli
    from augdag.flows import serve

    assert inspect.signature(serve.serve_all).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve.start_server).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve.serve_all).parameters["expose"].default is False
    assert '"--host", default="127.0.0.1"' in inspect.getsource(cli.main)
    readme = (REPO / "README.md").read_text()
    for words in ("binds to 127.0.0.1 only", "--expose", "no authentication", "execute code and read data"):
        assert words in readme, words


def _messy_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A user's folder with one of each problem: path (as the report writes it) -> kind."""
    src = image_folder(tmp_path / "ds", per_class=6)
    (src / "blank").mkdir()  # an empty class folder
    good = (src / "circle" / "img01.png").read_bytes()
    (src / "circle" / "cut.png").write_bytes(good[: len(good) // 2])
    (src / "circle" / "empty.png").write_bytes(b"")
    (src / "square" / "notes.png").write_text("not an image")
    (src / "square" / "bomb.png").write_bytes(png_claiming(60_000, 60_000))
    (src / "square" / "readme.txt").write_text("hello")
    secret = tmp_path / "secret.png"
    secret.write_bytes(good)
    (src / "bar" / "link.png").symlink_to(secret)
    odd = os.fsencode(src / "bar") + b"/caf\xe9.png"
    with open(odd, "wb") as f:
        f.write(good)
    (src / ".DS_Store").write_bytes(b"\0\1")  # hidden: skipped silently, as before
    kinds = {str(src / "circle" / "cut.png"): "corrupt or unreadable image",
             str(src / "circle" / "empty.png"): "not a PNG or JPEG by its content",
             str(src / "square" / "notes.png"): "not a PNG or JPEG by its content",
             str(src / "square" / "bomb.png"): "too many pixels",
             str(src / "square" / "readme.txt"): "not an image file",
             str(src / "bar" / "link.png"): "link outside the folder",
             repr(os.fsdecode(odd))[1:-1]: "file name not UTF-8",
             str(src / "blank"): "class folder without images"}
    return src, kinds


def test_every_problem_of_a_folder_is_reported_in_one_run_and_the_last_output_stays(tmp_path):
    from augdag.params import parse_params
    from augdag.tasks import ingest

    src, kinds = _messy_folder(tmp_path)
    proj = tmp_path / "proj"
    p = parse_params({"ingest": {"source": str(image_folder(tmp_path / "fine", per_class=6)), "n_per_class": 2,
                                 "n_val_per_class": 1, "n_test_per_class": 1, "image_size": 16}})
    ingest.run(p, proj)
    before = {f.name: f.read_bytes() for f in (proj / "data" / "ingest").iterdir() if f.is_file()}
    p = parse_params({**p.model_dump(), "ingest": {**p.ingest.model_dump(), "source": str(src)}})
    with pytest.raises(DataError) as err:
        ingest.run(p, proj)
    text = str(err.value)
    assert text.startswith(f"{src}: {len(kinds)} problem(s) in the dataset folder")
    for path, kind in kinds.items():
        assert f"\n    {path}: " in text, path
        assert f"\n  {kind} (" in text, kind
    assert "ingest.on_bad_file: skip" in text
    assert {f.name: f.read_bytes() for f in (proj / "data" / "ingest").iterdir() if f.is_file()} == before


def test_skip_leaves_the_bad_files_out_and_lists_them_with_their_reasons(tmp_path):
    import pandas as pd

    from augdag.params import parse_params
    from augdag.storage import read_manifest
    from augdag.tasks import ingest

    src, kinds = _messy_folder(tmp_path)
    p = parse_params({"ingest": {"source": str(src), "n_per_class": 2, "n_val_per_class": 1, "n_test_per_class": 1,
                                 "image_size": 16, "on_bad_file": "skip"}})
    summary = ingest.run(p, tmp_path / "proj")
    out = tmp_path / "proj" / "data" / "ingest"
    rejected = pd.read_csv(out / "rejected.csv")
    assert dict(zip(rejected.path, rejected.kind)) == kinds and summary["rejected"] == len(kinds)
    assert all(rejected.reason.str.len() > 0)
    assert summary["classes"] == 3  # the empty class is left out
    sources = set(read_manifest(out).source)
    assert not any(path in sources for path in kinds)
    from augdag.tasks.report import sections

    shown = sections.dataset(tmp_path / "proj", str(src))["rejected"]
    assert shown["count"] == len(kinds) and {r["path"] for r in shown["rows"]} == set(kinds)
