"""Chapter 5: the multi-task world, the KuaiRand reader, MMoE / PLE / HoME and their
diagnostics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from real_formats import write_kuairand

from recfunnel.data import kuairand
from recfunnel.data.download import DataUnavailableError
from recfunnel.data.impressions import TASK_GROUPS, TASK_RATES, ImpressionConfig, make_impressions
from recfunnel.data.ranking import RankBatch
from recfunnel.layers.moe import Norm, degradation
from recfunnel.models.home import HoMEConfig
from recfunnel.models.multitask import (
    Trace,
    build_ranker,
    diagnose,
    predict,
    task_metrics,
)
from recfunnel.models.multitask_baselines import MMoEConfig, PLEConfig, SharedBottomConfig
from recfunnel.recipes import fit_multitask
from recfunnel.train import TrainConfig


@pytest.fixture(scope="module")
def small():
    return make_impressions(ImpressionConfig(n_users=400, n_items=800, n_impressions=60_000))


def _tiny(data, config, d_emb=4, **kw):
    """A small ranker of ``config``'s kind (a config class) for ``data``."""
    torch.manual_seed(0)
    if config is HoMEConfig:
        cfg = HoMEConfig(meta_hidden=(16, 8), task_hidden=(8,), lora_rank=2, d_emb=d_emb,
                         tower_hidden=4, **kw)
    elif config is SharedBottomConfig:
        cfg = SharedBottomConfig(hidden=(16, 8), d_emb=d_emb, tower_hidden=4, **kw)
    else:
        cfg = config(expert_hidden=(16, 8), d_emb=d_emb, tower_hidden=4, **kw)
    return build_ranker(cfg, data)


def _batch(data, rows):
    return RankBatch(torch.from_numpy(data.features[:rows]),
                     torch.from_numpy(data.labels[:rows]).float())


# --------------------------------------------------------------------------- data


def test_impressions_have_the_planned_rates_and_shared_structure(small):
    rates = small.positive_rates()
    for task, target in TASK_RATES:
        assert rates[task] == pytest.approx(target, rel=0.25), task
    # labels correlate more inside a group than across groups: the structure to share
    corr = np.corrcoef(small.truth.T)
    index = {t: i for i, t in enumerate(small.tasks)}
    watch = [index[t] for t in TASK_GROUPS["watch"]]
    inter = [index[t] for t in TASK_GROUPS["interaction"]]
    within = np.mean([corr[a, b] for g in (watch, inter) for a in g for b in g if a < b])
    across = np.mean([corr[a, b] for a in watch for b in inter])
    assert within > across + 0.1 > 0.1
    train, valid, test = small.split()
    assert train.days.max() < valid.days.min() == valid.days.max() < test.days.min()
    assert len(train) + len(valid) + len(test) == len(small)


def test_conflict_pulls_clicks_and_watch_time_apart():
    def click_long_view_correlation(conflict: float) -> float:
        data = make_impressions(ImpressionConfig(n_users=300, n_items=600,
                                                 n_impressions=20_000, conflict=conflict))
        index = data.tasks.index
        return np.corrcoef(data.truth[:, index("click")], data.truth[:, index("long_view")])[0, 1]

    assert click_long_view_correlation(1.0) < click_long_view_correlation(0.0) - 0.1


def test_impressions_reject_bad_rows(small):
    with pytest.raises(ValueError, match="'item_id'"):
        features = small.features.copy()
        features[0, 1] = small.cardinalities[1]
        type(small)(**{**small.__dict__, "features": features})
    with pytest.raises(ValueError, match="labels"):
        type(small)(**{**small.__dict__, "labels": small.labels[:, :3]})
    with pytest.raises(ValueError, match="tasks"):
        ImpressionConfig(rates=TASK_RATES[:4])


def test_the_kuairand_reader_reads_the_real_layout(tmp_path):
    write_kuairand(tmp_path / "data")
    data = kuairand.read_kuairand(tmp_path)  # finds the data/ folder itself
    raw = pd.concat([pd.read_csv(tmp_path / "data" / f) for f in kuairand.LOG_FILES])
    kept = raw[raw["is_rand"] == 0].sort_values("time_ms", kind="stable")
    assert len(data) == len(kept) and data.tasks == kuairand.TASKS
    assert (np.diff(data.days) >= 0).all() and data.days.min() == 0
    labels = dict(zip(data.tasks, data.labels.T, strict=True))
    assert (labels["like"] == kept["is_like"].to_numpy()).all()
    effective = (kept["play_time_ms"] >= 7_000) | (kept["play_time_ms"] >= kept["duration_ms"] / 2)
    assert (labels["effective_view"] == effective.to_numpy()).all()
    assert "play_time_ms" not in data.fields  # an outcome, never a feature
    # the same user always gets the same id, and ids are contiguous
    user = data.features[:, data.fields.index("user_id")]
    assert len(np.unique(user)) == data.cardinalities[0] == kept["user_id"].nunique()


def test_the_kuairand_reader_names_what_is_wrong(tmp_path, monkeypatch):
    write_kuairand(tmp_path)
    log = pd.read_csv(tmp_path / kuairand.LOG_FILES[1])
    log.drop(columns="is_click").to_csv(tmp_path / kuairand.LOG_FILES[1], index=False)
    with pytest.raises(ValueError, match=r"log_standard_4_22.*'is_click'"):
        kuairand.read_kuairand(tmp_path)
    log.assign(is_like=log["is_like"] * 2).to_csv(tmp_path / kuairand.LOG_FILES[1],
                                                 index=False)
    with pytest.raises(ValueError, match="'is_like' must be 0 or 1"):
        kuairand.read_kuairand(tmp_path)
    monkeypatch.setenv("RECFUNNEL_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(kuairand, "KUAIRAND_URL", "http://127.0.0.1:9/KuaiRand-Pure.tar.gz")
    with pytest.raises(DataUnavailableError, match="offline"):
        kuairand.load_kuairand()


# --------------------------------------------------------------------------- models


def test_the_field_embedding_concatenates_fields_and_names_a_bad_one():
    from recfunnel.layers.features import FieldEmbedding

    embed = FieldEmbedding([3, 5], d=4)
    x = torch.tensor([[0, 4], [2, 1]])
    v = embed(x)
    assert v.shape == (2, 8)
    assert torch.equal(v[1, 4:], embed.tables[1].weight[1])
    with pytest.raises(IndexError, match="field 1"):
        embed(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="expected ids"):
        embed(torch.tensor([0, 1]))


@pytest.mark.parametrize("cls", [MMoEConfig, PLEConfig, HoMEConfig])
def test_gates_are_distributions_and_masks_hold(small, cls):
    model = _tiny(small, cls)
    recorded = Trace()
    model(_batch(small, 64), trace=recorded)
    for layer, gates in recorded.gates.items():
        for owner, g in gates.items():
            assert (g >= 0).all() and torch.allclose(g.sum(-1), torch.ones(64)), (layer, owner)
    if cls is PLEConfig:  # a task never reads another task's experts
        gates = recorded.gates["task"]
        own = recorded.own["task"]
        for task in small.tasks:
            others = [k for u in small.tasks if u != task for k in own[u]]
            assert gates[task][:, others].abs().max() == 0
            assert gates[task][:, own[task]].min() > 0


def test_the_hierarchy_mask_stops_a_task_reading_the_other_group(small):
    batch = _batch(small, 256)

    def gradients_from_click(hierarchy: bool) -> dict[str, float]:
        model = _tiny(small, HoMEConfig, hierarchy=hierarchy)
        model(batch)[:, small.tasks.index("click")].sum().backward()
        home = model.mixer
        inter = home.meta_index["interaction"]
        task_inter = home.task_index["interaction"] + home.task_index["like"]
        return {
            "meta": float(home.meta_experts.weights[0].grad[inter].abs().sum()),
            "task": float(home.task_experts.weights[0].grad[task_inter].abs().sum()),
            "own_group": float(home.task_experts.weights[0].grad[
                home.task_index["watch"]].abs().sum()),
        }

    masked, open_ = gradients_from_click(True), gradients_from_click(False)
    assert masked["meta"] == 0 and masked["task"] == 0  # click cannot reach interaction experts
    assert masked["own_group"] > 0
    assert open_["meta"] > 0 and open_["task"] > 0  # without the mask it does


def test_home_switches_change_the_architecture(small):
    full = _tiny(small, HoMEConfig).mixer
    bare = _tiny(small, HoMEConfig, expert_norm=None, feature_gate=False, self_gate=False).mixer
    assert full.feature_gates is not None and bare.feature_gates is None
    assert bare.self_gates is None and len(full.self_gates) == 2 + len(small.tasks)
    assert full.meta_experts.norm is Norm.BATCH and bare.meta_experts.norm is None
    assert _tiny(small, HoMEConfig, expert_norm=Norm.LAYER).mixer.meta_experts.norm is Norm.LAYER
    with pytest.raises(ValueError, match="groups"):
        HoMEConfig().mixer(36, small.tasks, {"watch": ("click",)})
    with pytest.raises(ValueError, match="expert_norm"):
        HoMEConfig(expert_norm="layer")  # a string, not a Norm
    with pytest.raises(ValueError, match="same width"):
        HoMEConfig(meta_hidden=(16, 8), task_hidden=(4,))


def test_batchnorm_models_predict_the_same_in_any_batch_size(small):
    model = _tiny(small, HoMEConfig)
    model(_batch(small, 512))  # update running statistics once
    rows = small.rows(np.arange(len(small)) < 300)
    assert np.allclose(predict(model, rows, batch_size=7), predict(model, rows), atol=1e-6)


def test_diagnose_sees_dead_relu_units_and_degradation(small):
    model = _tiny(small, MMoEConfig, n_experts=4)
    mmoe = model.mixer
    with torch.no_grad():  # the last layer of experts 0 and 1 can never fire
        mmoe.experts[0].biases[-1][:2] = -100.0
        mmoe.experts[0].biases[-1][2:] = 100.0  # and experts 2 and 3 always fire
        for gate in mmoe.task_gates[0]:  # uniform gates, except that click's owns expert 3
            gate.proj.weight.zero_()
            gate.proj.bias.zero_()
        mmoe.task_gates[0][0].proj.bias[3] = 30.0
    found = diagnose(model, small, sparse=("collect",))
    assert found["dead_units"] == pytest.approx(0.5)
    assert np.isnan(found["own_share"])  # MMoE has no task experts
    mass = torch.zeros(len(small.tasks), 4)
    mass[1:] = 1 / 4
    mass[0, :3], mass[0, 3] = 1e-13, 1.0
    expected = degradation(mass, [0, 1, 2, 3], relative=True).nanmean()
    assert found["degradation"] == pytest.approx(float(expected), rel=1e-3)
    assert float(expected) == pytest.approx((3 * (1 / 7 - 1 / 8) + (1 / 2.75 - 1 / 8)) / 3.5)


def test_models_learn_the_dense_tasks_beyond_chance(small):
    train, valid, test = small.split()
    for cls in (SharedBottomConfig, MMoEConfig, HoMEConfig):
        model = _tiny(small, cls, d_emb=8)
        cfg = TrainConfig(epochs=2, lr=1e-2, monitor="valid_mean_auc", progress=False)
        history = fit_multitask(model, train, valid, cfg)
        scores = task_metrics(model, test)
        watch = [scores[t]["auc"] for t in TASK_GROUPS["watch"]]
        assert np.mean(watch) > 0.6 and scores["long_view"]["gauc"] > 0.6, cls.__name__
        assert history.best_epoch is not None


def test_chapter_five_variants_change_only_what_they_name():
    from recfunnel.profiles import profile_for
    from recfunnel.recipes.home import HOME_ABLATIONS, HOME_STEPS, ranker_configs

    configs = ranker_configs(profile_for("home", "cpu"))
    home = configs["HoME"]
    for name, change in (HOME_STEPS | HOME_ABLATIONS).items():
        differ = {f for f in home.__dataclass_fields__
                  if getattr(configs[name], f) != getattr(home, f)}
        assert differ == set(change), name
    assert configs["MMoE+norm"].norm is Norm.BATCH and configs["MMoE"].norm is None


def test_the_gpu_profiles_kuairand_branch_runs_on_files_in_the_real_layout(tmp_path):
    """Chapter 5 trains MMoE and HoME on KuaiRand-Pure at the gpu profile only: the same
    calls, on a small file set in the real layout, so that no Colab user runs them first."""
    import dataclasses

    from recfunnel.profiles import profile_for
    from recfunnel.recipes import home as recipe

    write_kuairand(tmp_path / "data")
    real = kuairand.read_kuairand(tmp_path)
    size = dataclasses.replace(profile_for("home", "gpu"), epochs=1, batch_size=256)
    configs = recipe.ranker_configs(size)  # the gpu profile's model sizes
    sparse = tuple(sorted(real.tasks, key=real.positive_rates().get)[:4])
    for name in ("MMoE", "HoME"):
        _, run = recipe.fit_ranker(configs[name], real, size, seed=0, sparse=sparse,
                                   device="cpu", desc=name, progress=False)
        assert set(run["tasks"]) == set(real.tasks)
        assert all(0.0 <= run["tasks"][t]["auc"] <= 1.0 for t in real.tasks)
