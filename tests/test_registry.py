"""Registry ↔ data root, and `fetch` on every path: present, corrupt, absent offline, downloaded, converted."""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tradeoffs import registry
from tradeoffs.errors import TradeoffsError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty writable data root; registry entries added by a test are removed afterwards."""
    data = tmp_path / "root"
    data.mkdir()
    monkeypatch.setenv("TRADEOFFS_DATA", str(data))
    index = registry._index()
    before = dict(index)
    yield data
    index.clear()
    index.update(before)


def _inject(**kw: object) -> registry.Entry:
    fields = {"url": "", "licence": "test", "origin": "test", **kw}
    entry = registry.Entry(**fields)
    registry._index()[entry.path] = entry
    return entry


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving a temporary folder: (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ the registry itself


def test_entries_are_complete_and_unique() -> None:
    entries = registry.entries()
    paths = [e.path for e in entries]
    assert len(paths) == len(set(paths)) > 1700
    for e in entries:
        assert e.licence and e.origin, e.path
        assert e.group == e.path.split("/")[0]
        assert re.fullmatch(r"[0-9a-f]{64}|md5:[0-9a-f]{32}", e.sha256), e.path
        assert bool(e.url) or not e.online_only, f"{e.path}: online-only without a URL"
        if "github.com" in e.url:
            assert re.search(r"/raw/[0-9a-f]{40}/", e.url), f"{e.path}: URL not pinned to a commit"
        assert e.converter or not (e.source_sha256 or e.source or not e.reproducible), e.path
        if e.source:
            original = registry.entry(e.source)
            assert original.online_only and (e.url, e.source_sha256) == (original.url, original.sha256), e.path
    online = {e.path for e in entries if e.online_only}
    assert online == {"cifar10/cifar-10-python.tar.gz", "cifar10-resnets/resnet110-1d1ed7c2.th",
                      *(f"fashion-mnist/{f}-ubyte.gz" for f in ("train-images-idx3", "train-labels-idx1",
                                                                 "t10k-images-idx3", "t10k-labels-idx1"))}


def test_cue_conflict_entries_are_derived_from_texture_vs_shape_pngs() -> None:
    derived = [e for e in registry.entries() if e.path.startswith("model-vs-human/stimuli/cue-conflict/")]
    assert len(derived) == 1280
    for e in derived:
        category, stem = e.path.rsplit("/", 2)[-2], Path(e.path).stem
        assert e.converter == "jpeg_q95" and re.fullmatch(r"[0-9a-f]{64}", e.source_sha256 or "")
        assert e.url.endswith(f"/stimuli/style-transfer-preprocessed-512/{category}/{stem}.png")
    assert registry.entry("model-vs-human/stimuli/edge/oven/oven10.png").url.endswith("/stimuli/edges/oven/oven10.png")


# Files that only describe the offline data root, for people (and `rebuild`, which reads the PNG hashes from a data root
# that has them); no code a profile runs reads them, so they need no download (test_no_code_reads_documentation_files).
DOCUMENTATION = ("*/SOURCES.md", "*/MANIFEST.sha256", "tables/OFFLINE_MODELS.md",
                 "model-vs-human/stimuli/cue-conflict_original-png.sha256")


def test_every_file_code_reads_is_obtainable_without_the_offline_root() -> None:
    """A pinned URL (of the file or of the original a converter reads), or package data; only documentation has none."""
    from tradeoffs.convert import CONVERTERS

    for e in registry.entries():
        assert [bool(e.url), e.packaged, e.documentation].count(True) == 1, f"{e.path}: no single way to obtain it"
        assert e.documentation == any(fnmatch.fnmatchcase(e.path, p) for p in DOCUMENTATION), e.path
        assert e.converter is None or e.converter in CONVERTERS, e.path
        if e.packaged:
            assert registry._digest(registry._PACKAGE / e.path, e.sha256) == e.sha256, f"{e.path}: package copy differs"
    packaged = {e.path.split("/")[1] for e in registry.entries() if e.packaged}
    assert packaged == {"published", "tllib"}


def test_no_code_reads_documentation_files() -> None:
    """No string in the package or the notebooks' code names a documentation file as a path (prose may cite them)."""
    doc = re.compile(r"[\w./-]*(SOURCES\.md|MANIFEST\.sha256|OFFLINE_MODELS\.md|_original-png\.sha256)")
    repo = Path(__file__).resolve().parents[1]
    sources = {p: p.read_text() for p in (repo / "lib" / "tradeoffs").rglob("*.py") if p.name != "registry.py"}
    for nb in (repo / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        sources[nb] = "\n".join(line for cell in code for line in cell.splitlines() if not line.startswith(("%", "!")))
    named = [(p.name, node.value) for p, text in sources.items() for node in ast.walk(ast.parse(text))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and doc.fullmatch(node.value)]
    assert not named, f"code reads documentation files, which have no download: {named}"


def test_fetch_folder_skips_documentation(root: Path) -> None:
    e = _inject(path="d/a.bin", sha256=_sha(b"a"), size=1)
    _inject(path="d/SOURCES.md", sha256=_sha(b"notes"), size=5, documentation=True)
    (root / "d").mkdir()
    (root / e.path).write_bytes(b"a")
    assert registry.fetch_folder("d") == root / "d"


def test_packaged_tables_are_read_from_the_package(root: Path) -> None:
    """With an empty data root, `data.table` reads the transcribed tables shipped inside the package."""
    from tradeoffs import data

    path = registry.fetch("tables/published/kumar2022_table1_scaling_down.csv")
    assert path == registry._PACKAGE / "tables/published/kumar2022_table1_scaling_down.csv"
    assert len(data.table("tllib/model_selection_finetune")) == 80
    assert registry.fetch_folder("tables/published") == registry._PACKAGE / "tables/published"
    assert not list(root.iterdir())


@pytest.mark.data
def test_packaged_tables_equal_the_data_root_copies(data_root: Path) -> None:
    packaged = [e.path for e in registry.entries() if e.packaged]
    assert packaged
    for path in packaged:
        assert (registry._PACKAGE / path).read_bytes() == (data_root / path).read_bytes(), path


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(TradeoffsError, match="cifar10/test.npz") as err:
        registry.fetch("cifar10/tset.npz")
    assert "\n" not in str(err.value)
    with pytest.raises(TradeoffsError, match="model-vs-human/stimuli/edge"):
        registry.fetch_folder("model-vs-human/stimuli/egde")


def test_data_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEOFFS_DATA", str(tmp_path))
    assert registry.data_root() == tmp_path.resolve()
    monkeypatch.delenv("TRADEOFFS_DATA")
    assert registry.data_root().name == "tradeoffs"


@pytest.mark.data
def test_every_registered_file_is_in_the_data_root_with_its_hash(data_root: Path) -> None:
    """Hashes all ~140 MB once; online-only entries are not part of the offline root."""
    bad = []
    for e in registry.entries():
        if e.online_only:
            continue
        path = data_root / e.path
        if not path.is_file() or path.stat().st_size != e.size or registry._digest(path, e.sha256) != e.sha256:
            bad.append(e.path)
    assert not bad, f"{len(bad)} registered files missing or different, e.g. {bad[:3]}"


@pytest.mark.data
def test_every_file_in_the_data_root_is_registered(data_root: Path) -> None:
    known = {e.path for e in registry.entries()}
    files = {p.relative_to(data_root).as_posix() for p in data_root.rglob("*") if p.is_file()}
    assert files - known == {"README.md", "registry.txt"}


@pytest.mark.data
def test_rebuild_reproduces_the_shipped_csv(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "registry_files.csv"
    try:
        assert registry.rebuild(data_root, out) == len([e for e in registry.entries() if not e.online_only])
    finally:
        registry._index.cache_clear()
    assert out.read_bytes() == registry._CSV.read_bytes()


def test_rebuild_rejects_unlisted_and_missing_files(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "cifar10h").mkdir(parents=True)
    (fake / "cifar10h" / "cifar10h-probs.npy").write_bytes(b"x")
    (fake / "registry.txt").write_text(f"cifar10h/cifar10h-probs.npy {_sha(b'x')}\n")
    out = tmp_path / "out.csv"
    try:
        assert registry.rebuild(fake, out) == 1
        assert out.read_text().splitlines()[1] == f"cifar10h/cifar10h-probs.npy,{_sha(b'x')},1,"
        (fake / "cifar10h" / "extra.npy").write_bytes(b"y")
        with pytest.raises(TradeoffsError, match="in no registry.txt"):
            registry.rebuild(fake, out)
        (fake / "cifar10h" / "extra.npy").unlink()
        (fake / "cifar10h" / "cifar10h-probs.npy").unlink()
        with pytest.raises(TradeoffsError, match="absent"):
            registry.rebuild(fake, out)
    finally:
        registry._index.cache_clear()


# ------------------------------------------------------------------ fetch


def test_fetch_returns_a_valid_present_file_and_hashes_it_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = _inject(path="t/a.bin", sha256=_sha(b"abc"), size=3)
    (root / "t").mkdir()
    (root / "t" / "a.bin").write_bytes(b"abc")
    calls = []
    monkeypatch.setattr(registry, "_digest", lambda p, h, f=registry._digest: calls.append(p) or f(p, h))
    assert registry.fetch(e.path) == root / "t" / "a.bin"
    assert registry.fetch(e.path) == root / "t" / "a.bin"
    assert len(calls) == 1
    assert registry.fetch_folder("t") == root / "t"


def test_fetch_reports_a_checksum_mismatch(root: Path) -> None:
    e = _inject(path="t/b.bin", sha256=_sha(b"good"), size=4, url="https://example.org/b.bin")
    (root / "t").mkdir()
    (root / "t" / "b.bin").write_bytes(b"evil")
    with pytest.raises(TradeoffsError) as err:
        registry.fetch(e.path)
    message = str(err.value)
    assert "\n" not in message and e.sha256 in message and _sha(b"evil") in message and "delete it" in message


def test_fetch_reports_a_wrong_size_without_hashing(root: Path) -> None:
    e = _inject(path="t/c.bin", sha256=_sha(b"good"), size=4)
    (root / "t").mkdir()
    (root / "t" / "c.bin").write_bytes(b"longer")
    with pytest.raises(TradeoffsError, match="6 bytes"):
        registry.fetch(e.path)


def test_fetch_offline_gives_one_line_naming_file_url_and_variable(root: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/missing.bin"
    e = _inject(path="t/missing.bin", sha256=_sha(b"x"), size=1, url=url)
    with pytest.raises(TradeoffsError) as err:
        registry.fetch(e.path)
    message = str(err.value)
    assert "\n" not in message and e.path in message and url in message and "TRADEOFFS_DATA" in message
    assert list(root.iterdir()) == [], "a failed download left files or folders behind"


def test_fetch_without_url_says_it_ships_with_the_offline_root(root: Path) -> None:
    with pytest.raises(TradeoffsError, match="offline data root"):
        registry.fetch("tables/SOURCES.md")


def test_fetch_into_a_read_only_root_says_so(root: Path) -> None:
    e = _inject(path="t/ro.bin", sha256=_sha(b"x"), size=1, url="http://127.0.0.1:9/ro.bin")
    root.chmod(0o555)
    try:
        with pytest.raises(TradeoffsError, match="read-only"):
            registry.fetch(e.path)
    finally:
        root.chmod(0o755)
    assert list(root.iterdir()) == []


def test_fetch_downloads_verifies_and_moves_into_place(root: Path, server: tuple[str, Path]) -> None:
    base, served = server
    payload = np.random.default_rng(0).bytes(5000)
    (served / "w.th").write_bytes(payload)
    e = _inject(path="models/w.th", sha256=_sha(payload), size=len(payload), url=f"{base}/w.th")
    path = registry.fetch(e.path)
    assert path == root / "models" / "w.th" and path.read_bytes() == payload
    assert not [p for p in root.rglob("*") if p.is_file() and p != path], "leftover temporary files"


def test_fetch_converts_a_derived_file_and_checks_both_hashes(root: Path, server: tuple[str, Path]) -> None:
    base, served = server
    png = _png(1)
    (served / "cat1-dog2.png").write_bytes(png)
    expected = io.BytesIO()
    Image.open(io.BytesIO(png)).save(expected, format="JPEG", quality=95, subsampling=0, optimize=True)
    e = _inject(path="stim/cat/cat1-dog2.jpg", sha256=_sha(expected.getvalue()), size=len(expected.getvalue()),
                url=f"{base}/cat1-dog2.png",
                converter="jpeg_q95", source_sha256=_sha(png))
    path = registry.fetch(e.path)
    assert path.read_bytes() == expected.getvalue()
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (24, 24)
    assert [p for p in root.rglob("*") if p.is_file()] == [path], "original or partial file left behind"


def test_a_failed_conversion_leaves_nothing_in_place(root: Path, server: tuple[str, Path]) -> None:
    base, served = server
    png = _png(2)
    (served / "x.png").write_bytes(png)
    e = _inject(path="stim/x.jpg", sha256=_sha(b"not what the converter makes"), size=1, url=f"{base}/x.png",
                converter="jpeg_q95", source_sha256=_sha(png))
    with pytest.raises(TradeoffsError, match="Converter jpeg_q95"):
        registry.fetch(e.path)
    assert not [p for p in (root / "stim").rglob("*") if p.is_file()]


def test_a_download_with_the_wrong_hash_is_rejected(root: Path, server: tuple[str, Path]) -> None:
    base, served = server
    (served / "v.csv").write_bytes(b"a,b\n1,2\n")
    e = _inject(path="t/v.csv", sha256=_sha(b"a,b\n1,3\n"), size=8, url=f"{base}/v.csv")
    with pytest.raises(TradeoffsError, match="does not match the registered hash"):
        registry.fetch(e.path)
    assert list(root.iterdir()) == [], "a rejected download left files or folders behind"


def test_md5_hashes_are_checked_too(root: Path, server: tuple[str, Path]) -> None:
    base, served = server
    (served / "f.gz").write_bytes(b"payload")
    e = _inject(path="fm/f.gz", sha256="md5:" + hashlib.md5(b"payload").hexdigest(), size=7, url=f"{base}/f.gz")
    assert registry.fetch(e.path).read_bytes() == b"payload"
    tampered = root / "fm" / "f.gz"
    mtime = tampered.stat().st_mtime_ns
    tampered.write_bytes(b"payloaX")
    os.utime(tampered, ns=(mtime + 10**9, mtime + 10**9))  # a new mtime even on coarse-clock file systems
    with pytest.raises(TradeoffsError, match="md5:"):
        registry.fetch(e.path)


def test_pin_records_the_first_hash_and_refuses_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "archive.tar.gz"
    path.write_bytes(b"first download")
    digest = registry.pin(path)
    assert digest == hashlib.sha256(b"first download").hexdigest()
    assert (tmp_path / "archive.tar.gz.sha256").read_text().split() == [digest, "archive.tar.gz"]
    assert registry.pin(path) == digest
    path.write_bytes(b"a different file")
    with pytest.raises(TradeoffsError, match="first use recorded"):
        registry.pin(path)


# ------------------------------------------------------------------ converters of real entries

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The stored files' layout: key order, dtype and per-item shape (checked against the data root's copies below).
CIFAR_LAYOUT = {
    "cifar10/test.npz": {"images": ("uint8", (32, 32, 3)), "labels": ("int64", ()), "class_names": ("<U10", ())},
    "cifar10/train_jpeg.npz": {"jpeg": ("uint8", ()), "offsets": ("int64", ()), "labels": ("int64", ()),
                               "class_names": ("<U10", ())},
}


def _layout(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    with np.load(path) as z:
        return {k: (str(z[k].dtype), z[k].shape[1:]) for k in z.files}


def _cifar_tarball(rng: np.random.Generator, n: int) -> tuple[bytes, dict[str, tuple[np.ndarray, list[int]]]]:
    """A miniature cifar-10-python.tar.gz (the official pickles' format) with `n` images per batch."""
    batches = {m: (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist())
               for m in ("test_batch", *(f"data_batch_{i}" for i in range(1, 6)))}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        objects = {m: {b"data": x, b"labels": y} for m, (x, y) in batches.items()}
        objects["batches.meta"] = {b"label_names": [c.encode() for c in CIFAR_CLASSES]}
        for member, obj in objects.items():
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue(), batches


def test_cifar10_npz_entries_are_converted_from_the_official_tarball() -> None:
    tarball = registry.entry("cifar10/cifar-10-python.tar.gz")
    for name, converter in (("test", "cifar10_test_npz"), ("train_jpeg", "cifar10_train_jpeg_npz")):
        e = registry.entry(f"cifar10/{name}.npz")
        assert (e.converter, e.source, e.url, e.source_sha256) == (converter, tarball.path, tarball.url, tarball.sha256)
        assert not e.reproducible


def test_cifar10_npz_converters_on_a_miniature_tarball(root: Path, server: tuple[str, Path]) -> None:
    """Download the (miniature) tarball once, convert both files, record their hashes, and reject a changed file.

    The converted files equal the data root's copies in layout; in bytes only if Pillow re-encodes the official pixels
    exactly as the JPEGs the data root was built from (their headers match, test_cifar10_jpeg_settings_...), which
    cannot be checked offline. So the registry marks them not reproducible: a converted file's sha256 is recorded
    beside it on first use (`registry.pin`) and checked on every later read.
    """
    from tradeoffs.convert import cifar10_jpeg

    base, served = server
    blob, batches = _cifar_tarball(np.random.default_rng(3), 4)
    (served / "cifar-10-python.tar.gz").write_bytes(blob)
    tarball = _inject(path="cifar10/cifar-10-python.tar.gz", sha256="md5:" + hashlib.md5(blob).hexdigest(),
                      size=len(blob), url=f"{base}/cifar-10-python.tar.gz", online_only=True)
    for name in ("test", "train_jpeg"):
        real = registry.entry(f"cifar10/{name}.npz")
        _inject(path=real.path, sha256=real.sha256, size=0, url=tarball.url, converter=real.converter,
                source=tarball.path, source_sha256=tarball.sha256, reproducible=False)
    test, train = registry.fetch("cifar10/test.npz"), registry.fetch("cifar10/train_jpeg.npz")
    for path in (test, train):
        assert _layout(path) == CIFAR_LAYOUT[f"cifar10/{path.name}"]
        assert (root / "cifar10" / f"{path.name}.sha256").read_text().split()[0] == _sha(path.read_bytes())
    assert sorted(p.name for p in (root / "cifar10").iterdir()) == [
        "cifar-10-python.tar.gz", "test.npz", "test.npz.sha256", "train_jpeg.npz", "train_jpeg.npz.sha256"]

    def official(x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    with np.load(test) as z:
        pixels, labels = official(batches["test_batch"][0]), batches["test_batch"][1]
        decoded = [np.asarray(Image.open(io.BytesIO(cifar10_jpeg(p))).convert("RGB")) for p in pixels]
        np.testing.assert_array_equal(z["images"], np.stack(decoded))
        assert z["labels"].tolist() == labels and z["class_names"].tolist() == list(CIFAR_CLASSES)
        assert np.abs(z["images"].astype(int) - pixels).mean() < 80  # lossy, but the same images
    with np.load(train) as z:
        pixels = np.concatenate([official(batches[f"data_batch_{i}"][0]) for i in range(1, 6)])
        jpeg, offsets = z["jpeg"].tobytes(), z["offsets"]
        assert offsets[0] == 0 and offsets[-1] == len(jpeg) and len(offsets) == 21
        assert [jpeg[a:b] for a, b in zip(offsets[:-1], offsets[1:])] == [cifar10_jpeg(p) for p in pixels]
        assert z["labels"].tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    registry._VERIFIED.clear()
    assert registry.fetch("cifar10/test.npz") == test  # checked against the recorded hash, not the registered one
    mtime = test.stat().st_mtime_ns
    test.write_bytes(test.read_bytes() + b"x")
    os.utime(test, ns=(mtime + 10**9, mtime + 10**9))
    with pytest.raises(TradeoffsError, match="first use recorded"):
        registry.fetch("cifar10/test.npz")


@pytest.mark.data
def test_cifar10_layout_and_jpeg_settings_match_the_stored_files(data_root: Path) -> None:
    """The stored files have `CIFAR_LAYOUT`; re-encoding a stored image with the converter's settings writes the same
    JPEG headers (JFIF, quantisation and Huffman tables, 4:2:0 sampling) as the source JPEGs."""
    from tradeoffs.convert import cifar10_jpeg

    for name, layout in CIFAR_LAYOUT.items():
        assert _layout(data_root / name) == layout
    with np.load(data_root / "cifar10/train_jpeg.npz") as z:
        jpeg, offsets = z["jpeg"], z["offsets"]
        for i in (0, 1, 49_999):
            stored = jpeg[offsets[i]:offsets[i + 1]].tobytes()
            again = cifar10_jpeg(np.asarray(Image.open(io.BytesIO(stored)).convert("RGB")))
            start_of_scan = stored.index(b"\xff\xda")
            assert again[:start_of_scan + 14] == stored[:start_of_scan + 14], i


def _human_categories(indices: dict[str, list[int]]) -> str:
    """A human_categories.py in model-vs-human's layout: class attributes `<class>` (WNIDs) and `<class>_indices`."""
    lines = ["import numpy as np", "", "", "class HumanCategories(object):", ""]
    for category, ix in indices.items():
        lines += [f"    {category} = ['n00000000']", f"    {category}_indices = {ix!r}"]
    return "\n".join([*lines, "", "    def get_imagenet_indices_for_category(self, category):",
                      "        return getattr(self, category + '_indices')", ""])


def test_16class_indices_are_converted_from_human_categories(root: Path, server: tuple[str, Path]) -> None:
    """No published hash for human_categories.py: the download is unchecked, the converted files' hashes decide."""
    base, served = server
    indices = {f"c{i:02d}": [15 - i, 20 + i] for i in range(16)}
    (served / "human_categories.py").write_text(_human_categories(indices))
    categories = "".join(f"n{i:08d} name {i}, synonym\n" for i in range(40))
    (root / "model-vs-human/helper").mkdir(parents=True)
    (root / "model-vs-human/helper/imagenet_categories.txt").write_text(categories)
    _inject(path="model-vs-human/helper/imagenet_categories.txt", sha256=_sha(categories.encode()), size=0)
    expected_json = "{\n" + ",\n".join(f' "{c}": [{a}, {b}]' for c, (a, b) in indices.items()) + "\n}\n"
    rows = [f"{c},{i},n{i:08d},\"name {i}, synonym\"" for c, ix in indices.items() for i in sorted(ix)]
    expected_csv = "\n".join(["category16,imagenet_index,wnid,imagenet_name", *rows, ""])
    for suffix, expected in (("json", expected_json), ("csv", expected_csv)):
        _inject(path=f"model-vs-human/helper/16class_imagenet_indices.{suffix}", sha256=_sha(expected.encode()),
                size=len(expected), url=f"{base}/human_categories.py", converter=f"mvh_16class_{suffix}")
        assert registry.fetch(f"model-vs-human/helper/16class_imagenet_indices.{suffix}").read_text() == expected
    (served / "human_categories.py").write_text(_human_categories(dict(list(indices.items())[:15])))
    (root / "model-vs-human/helper/16class_imagenet_indices.json").unlink()
    with pytest.raises(TradeoffsError, match="not 16"):
        registry.fetch("model-vs-human/helper/16class_imagenet_indices.json")
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == [
        "16class_imagenet_indices.csv", "imagenet_categories.txt"], "a failed conversion left files behind"


@pytest.mark.data
def test_16class_converters_rebuild_the_stored_files(data_root: Path, tmp_path: Path) -> None:
    """From a human_categories.py holding the stored classes' indices, both converters write the registered bytes."""
    from tradeoffs.convert import CONVERTERS

    indices = json.loads((data_root / "model-vs-human/helper/16class_imagenet_indices.json").read_text())
    source = tmp_path / "human_categories.py"
    source.write_text(_human_categories(indices))
    for suffix in ("json", "csv"):
        e = registry.entry(f"model-vs-human/helper/16class_imagenet_indices.{suffix}")
        CONVERTERS[e.converter](source, tmp_path / suffix, registry.fetch)
        assert _sha((tmp_path / suffix).read_bytes()) == e.sha256, suffix


def test_mirror_sends_downloads_to_the_same_path_below_it(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://github.com/a/b/raw/c0ffee/data/x.npy"
    monkeypatch.delenv("TRADEOFFS_MIRROR", raising=False)
    assert registry.download_url(url) == url
    monkeypatch.setenv("TRADEOFFS_MIRROR", "http://127.0.0.1:8000/")
    assert registry.download_url(url) == "http://127.0.0.1:8000/github.com/a/b/raw/c0ffee/data/x.npy"
    with pytest.raises(TradeoffsError, match="not an http"):
        registry.download_url("ftp://example.org/x")


def test_an_interrupted_download_is_one_clear_error_and_leaves_nothing(root: Path) -> None:
    """The server promises 5,000 bytes and closes the connection after 100."""
    class Cut(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"x" * 100)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cut)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        e = _inject(path="cut/w.th", sha256=_sha(b"x" * 5000), size=5000,
                    url=f"http://127.0.0.1:{httpd.server_address[1]}/w.th")
        with pytest.raises(TradeoffsError, match="Cannot download cut/w.th"):
            registry.fetch(e.path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert list(root.iterdir()) == [], "an interrupted download left files or folders behind"
