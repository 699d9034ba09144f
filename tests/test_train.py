"""tradeoffs.train: determinism, per-epoch checkpoints, resume after a kill, the cache, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tradeoffs import train
from tradeoffs.errors import TradeoffsError

RECIPE = train.Recipe(epochs=3, batch_size=16, lr=0.05, seed=1)


@pytest.fixture()
def arrays() -> tuple[np.ndarray, np.ndarray]:
    """48 tiny images whose class is written in their mean brightness, so a network can learn it."""
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    images = rng.integers(0, 60, (48, 32, 32, 3)) + 80 * labels[:, None, None, None]
    return images.astype(np.uint8), labels


def model(seed: int = 0):
    return train.init("cifar10_resnet8", seed, num_classes=3, width=4)


def weights(m) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = weights(model(0)), weights(model(0)), weights(model(1))
    assert same(a, b) and not same(a, c)
    assert torch.equal(torch.rand(3), expected)


def test_fit_is_deterministic_and_writes_every_epoch(isolated, arrays):
    m1, m2 = model(), model()
    seen: list[int] = []
    run = train.fit(m1, *arrays, RECIPE, device="cpu", callback=lambda e, m: seen.append(e), progress=False)
    assert seen == [0, 1, 2, 3] and not m1.module.training
    assert list(run.history["epoch"]) == [1, 2, 3] and run.history["lr"].iloc[-1] == pytest.approx(0, abs=1e-12)
    assert [run.checkpoint(e).name for e in range(4)] == [f"epoch_00{e}.pt" for e in range(4)]
    # a second model trained from the same init in a separate cache gives bit-identical weights
    import os
    os.environ["TRADEOFFS_CACHE"] = str(isolated / "cache2")
    run2 = train.fit(m2, *arrays, RECIPE, device="cpu", progress=False)
    assert run2.key == run.key and run2.directory != run.directory
    assert same(weights(m1), weights(m2))
    assert not same(run.state_dict(0), run.state_dict(3))  # it did train


def test_training_learns_the_toy_task(isolated, arrays):
    run = train.fit(model(), *arrays, train.Recipe(epochs=6, batch_size=16, lr=0.05, augment=False), device="cpu",
                    progress=False)
    assert run.history["train_loss"].iloc[-1] < run.history["train_loss"].iloc[0]


def test_seed_changes_the_run(isolated, arrays):
    a, b = model(), model()
    train.fit(a, *arrays, RECIPE, device="cpu", progress=False)
    train.fit(b, *arrays, train.Recipe(**{**RECIPE.__dict__, "seed": 2}), device="cpu", progress=False)
    assert not same(weights(a), weights(b))


def test_resume_after_kill_continues_at_the_right_epoch(isolated, arrays, monkeypatch):
    reference = model()
    train.fit(reference, *arrays, RECIPE, device="cpu", progress=False)
    import shutil
    shutil.rmtree(isolated / "cache")

    class Killed(Exception):
        pass

    def kill_after_epoch_2(epoch, m):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train.fit(model(), *arrays, RECIPE, device="cpu", callback=kill_after_epoch_2, progress=False)
    runs = train.runs()
    assert len(runs) == 1 and runs.loc[0, "epochs_done"] == 2 and runs.loc[0, "epochs"] == 3

    trained: list[int] = []
    real_save = train._save
    monkeypatch.setattr(train, "_save", lambda path, state: (trained.append(state["epoch"]), real_save(path, state)))
    resumed = model()
    run = train.fit(resumed, *arrays, RECIPE, device="cpu", progress=False)
    assert trained == [3]  # only the missing epoch was trained
    assert list(run.history["epoch"]) == [1, 2, 3]
    assert same(weights(resumed), weights(reference))

    trained.clear()
    again = model()
    train.fit(again, *arrays, RECIPE, device="cpu", progress=False)
    assert trained == [] and same(weights(again), weights(reference))  # a rerun recomputes nothing


def test_checkpoints_load_as_models_and_runs_are_listed(isolated, arrays):
    run = train.fit(model(), *arrays, RECIPE, device="cpu", tag="toy", progress=False)
    m = run.model(2, num_classes=3, width=4)
    assert same(weights(m), run.state_dict(2))
    assert train.runs().loc[0, ["model", "tag", "epochs_done"]].tolist() == ["cifar10_resnet8", "toy", 3]
    loaded = train.load_run(run.key)
    assert loaded.recipe == RECIPE and len(loaded.history) == 3
    with pytest.raises(TradeoffsError, match="no checkpoint for epoch 7"):
        run.checkpoint(7)
    with pytest.raises(TradeoffsError, match="no training run"):
        train.load_run("0" * 64)


def test_augment_is_a_shifted_flipped_crop():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = train.augment(x, gen)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (train.PAD,) * 4)
    for i in range(2):  # every output is one of the 9x9 crops of the padded image, possibly mirrored
        crops = [padded[i, :, r:r + 8, c:c + 8] for r in range(9) for c in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)
    assert torch.equal(train.augment(x, torch.Generator().manual_seed(0)), out)


def test_bad_input_is_refused(arrays):
    images, labels = arrays
    with pytest.raises(TradeoffsError, match="uint8"):
        train.fit(model(), images.astype(np.float32), labels, RECIPE, device="cpu")
    with pytest.raises(TradeoffsError, match="labels must lie"):
        train.fit(model(), images, labels + 5, RECIPE, device="cpu")
    with pytest.raises(TradeoffsError, match="fewer than one batch"):
        train.fit(model(), images[:8], labels[:8], RECIPE, device="cpu")
    with pytest.raises(TradeoffsError, match="epochs must be"):
        train.Recipe(epochs=0)


pytestmark = pytest.mark.usefixtures("one_thread")
