"""Registry ↔ data root, and `fetch` on every path: present, corrupt, absent offline, downloaded, converted."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import re
import socket
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
        assert (e.converter is None) == (e.source_sha256 is None), e.path
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
        registry.fetch("tables/published/kumar2022_table1_scaling_down.csv")


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
