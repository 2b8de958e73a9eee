"""The run cache: a loaded run equals the full computation, and any change retrains."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from recfunnel.data.sequences import SequentialSplit
from recfunnel.recipes import NEXT_ITEM, fit_recbole_sasrec
from recfunnel.runcache import CACHE_VAR, cached_training
from recfunnel.runtime import set_seed
from recfunnel.train import TrainConfig, fit

CFG = TrainConfig(epochs=3, lr=0.05, progress=False, device="cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_VAR, str(tmp_path / "runs"))
    return tmp_path / "runs"


def run(cfg: TrainConfig = CFG, data_seed: int = 0, calls: list | None = None):
    """Build a model under seed 0 and train it through the cache on noisy data whose draws
    consume the global random state; returns the model, its history and the next draws."""
    set_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(data_seed))

    def train():
        if calls is not None:
            calls.append(1)
        batches = [x[i:i + 16] + 0.1 * torch.randn(16, 4) for i in range(0, 64, 16)]
        return fit(model, batches, step=lambda m, b: m(b).pow(2).mean(), cfg=cfg)

    history = cached_training(model, train, cfg, "noisy squares", data_seed)
    after = (torch.rand(3), np.random.rand(3))
    return model, history, after


def test_a_cached_run_equals_the_full_computation(cache):
    calls = []
    fresh_model, fresh_history, fresh_after = run(calls=calls)
    loaded_model, loaded_history, loaded_after = run(calls=calls)
    assert calls == [1], "the second run must be loaded, not trained"
    for name, value in fresh_model.state_dict().items():
        assert torch.equal(value, loaded_model.state_dict()[name])
    assert loaded_history == fresh_history
    # the random state the run left behind is restored: later cells draw the same numbers
    assert torch.equal(fresh_after[0], loaded_after[0])
    assert np.array_equal(fresh_after[1], loaded_after[1])


@pytest.mark.parametrize("change", ["settings", "data"])
def test_any_change_trains_again(cache, change):
    calls = []
    run(calls=calls)
    if change == "settings":
        run(dataclasses.replace(CFG, lr=0.01), calls=calls)
    else:
        run(data_seed=1, calls=calls)
    assert calls == [1, 1]


def test_a_configuration_that_changes_no_weight_still_changes_the_key(cache):
    """KuaiFormer with and without logQ start from the same weights."""
    from recfunnel.models.kuaiformer import KuaiFormer, KuaiFormerConfig

    trained = []
    for log_q in (True, False):
        set_seed(0)
        model = KuaiFormer(KuaiFormerConfig(n_items=20, d_model=8, d_ffn=16, n_raw=4,
                                            log_q=log_q))

        def train(model=model, log_q=log_q):
            trained.append(log_q)
            return fit(model, [torch.zeros(1)], step=lambda m, b: m.item_vectors().sum() * 0,
                       cfg=CFG)

        cached_training(model, train, CFG, "no data")
    assert trained == [True, False]


def test_progress_labels_do_not_change_the_key(cache):
    calls = []
    run(calls=calls)
    run(dataclasses.replace(CFG, desc="another label", progress=True), calls=calls)
    assert calls == [1]


def test_a_damaged_entry_is_trained_again_and_replaced(cache):
    calls = []
    model, _, _ = run(calls=calls)
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(b"not a checkpoint")
    again, _, _ = run(calls=calls)
    assert calls == [1, 1]
    assert torch.equal(model.weight, again.weight)
    assert entry.stat().st_size > 100 and not list(cache.glob("*.partial"))


def test_off_switches_the_cache_off(cache, monkeypatch):
    monkeypatch.setenv(CACHE_VAR, "off")
    calls = []
    run(calls=calls)
    run(calls=calls)
    assert calls == [1, 1] and not cache.exists()


def test_sasrec_of_chapters_2_to_4_is_trained_once(cache, capsys):
    """The shared reference: the same split, seed and settings load the stored run."""
    rng = np.random.default_rng(0)
    frame = {"user_id": np.repeat(np.arange(1, 21), 8), "item_id": rng.integers(1, 30, 160),
             "timestamp": np.tile(np.arange(8), 20)}
    split = SequentialSplit(pd.DataFrame(frame), max_len=10)
    cfg = dataclasses.replace(NEXT_ITEM, epochs=2, device="cpu", progress=False)
    set_seed(3)
    first, _ = fit_recbole_sasrec(split, 3, cfg)
    assert "loaded" not in capsys.readouterr().out
    set_seed(3)
    second, _ = fit_recbole_sasrec(split, 3, dataclasses.replace(cfg, desc="SASRec, seed 3"))
    assert "loaded from the run cache" in capsys.readouterr().out
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name])


def test_a_change_to_the_package_source_changes_every_key(tmp_path, monkeypatch):
    """A stale run can never hide a change under src/: the key hashes every source file."""
    import recfunnel.runcache as runcache

    package = tmp_path / "recfunnel"
    package.mkdir()
    (package / "train.py").write_text("STEP = 1\n")
    monkeypatch.setattr(runcache, "PACKAGE", package)
    runcache._source_digest.cache_clear()
    set_seed(0)
    model = torch.nn.Linear(2, 1)
    before = runcache.run_key(model, "cpu", CFG)
    (package / "train.py").write_text("STEP = 2\n")
    runcache._source_digest.cache_clear()
    after = runcache.run_key(model, "cpu", CFG)
    runcache._source_digest.cache_clear()
    assert before != after
