"""Bad settings and bad callbacks of the training loop: refused naming the setting, never a
run that silently does something else (a NaN "best" epoch, a zero gradient clip)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from refusals import refused

from recfunnel.data.sequences import PopularitySampler, UniformSampler, in_batch_log_q, left_pad
from recfunnel.train import TrainConfig, fit, shuffled

QUIET = TrainConfig(epochs=2, progress=False, device="cpu")


class Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)

    def forward(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y)


def data(n=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return [(x[i:i + 8], x[i:i + 8].sum(1)) for i in range(0, n, 8)]


CONFIG_CASES = {
    "epochs 0": ({"epochs": 0}, "TrainConfig.epochs"),
    "epochs -1": ({"epochs": -1}, "TrainConfig.epochs"),
    "epochs 1.5": ({"epochs": 1.5}, "TrainConfig.epochs"),
    "lr 0": ({"lr": 0.0}, "TrainConfig.lr"),
    "lr negative": ({"lr": -1e-3}, "TrainConfig.lr"),
    "lr NaN": ({"lr": math.nan}, "TrainConfig.lr"),
    "lr infinite": ({"lr": math.inf}, "TrainConfig.lr"),
    "lr text": ({"lr": "1e-3"}, "TrainConfig.lr"),
    "weight decay negative": ({"weight_decay": -0.1}, "TrainConfig.weight_decay"),
    "grad clip 0": ({"grad_clip": 0.0}, "TrainConfig.grad_clip"),
    "grad clip negative": ({"grad_clip": -1.0}, "TrainConfig.grad_clip"),
    "grad clip NaN": ({"grad_clip": math.nan}, "TrainConfig.grad_clip"),
    "mode maximum": ({"mode": "maximum"}, "TrainConfig.mode"),
    "patience -1": ({"patience": -1, "monitor": "score"}, "TrainConfig.patience"),
    "patience 0": ({"patience": 0, "monitor": "score"}, "TrainConfig.patience"),
    "patience 1.5": ({"patience": 1.5, "monitor": "score"}, "TrainConfig.patience"),
    "patience without monitor": ({"patience": 2}, "monitor"),
    "monitor not a name": ({"monitor": 3}, "TrainConfig.monitor"),
    "seed negative": ({"seed": -1}, "TrainConfig.seed"),
    "seed fractional": ({"seed": 0.5}, "TrainConfig.seed"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_train_config_refuses(case):
    changes, name = CONFIG_CASES[case]
    refused(lambda: dataclasses.replace(QUIET, **changes), name)


def test_grad_clip_none_switches_clipping_off():
    assert dataclasses.replace(QUIET, grad_clip=None).grad_clip is None


def monitored(value_of_epoch):
    return dataclasses.replace(QUIET, epochs=3, monitor="score"), (
        lambda model: {"score": value_of_epoch()})


def test_a_nan_monitored_value_stops_training_naming_it():
    cfg, evaluate = monitored(lambda: math.nan)
    # before: NaN stayed "best" for ever and no later epoch could replace it
    refused(lambda: fit(Regression(), data(), cfg=cfg, evaluate=evaluate), "'score'",
            "epoch 1", "NaN")


def test_a_nan_after_good_epochs_is_named_with_its_epoch():
    values = iter([0.5, 0.7, math.nan])
    cfg, evaluate = monitored(lambda: next(values))
    refused(lambda: fit(Regression(), data(), cfg=cfg, evaluate=evaluate), "epoch 3")


EVALUATE_CASES = {
    "a number": (lambda model: 0.5, ("evaluate", "dict", "float")),
    "a list": (lambda model: [0.5], ("evaluate", "dict", "list")),
    "None": (lambda model: None, ("evaluate", "dict", "NoneType")),
    "a text metric": (lambda model: {"score": "good"}, ("evaluate", "'score'", "not a number")),
    "a None metric": (lambda model: {"score": None}, ("evaluate", "'score'")),
    "a vector metric": (lambda model: {"score": torch.ones(3)}, ("evaluate", "'score'")),
}


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_must_return_a_dict_of_numbers(case):
    evaluate, names = EVALUATE_CASES[case]
    refused(lambda: fit(Regression(), data(), cfg=QUIET, evaluate=evaluate), *names)


def test_an_empty_batch_list_is_named():
    refused(lambda: fit(Regression(), [], cfg=QUIET), "batches", "empty")


def test_an_epoch_function_that_returns_nothing_is_named():
    refused(lambda: fit(Regression(), lambda epoch: [], cfg=QUIET), "batches", "epoch 1")


def test_a_one_shot_generator_is_named():
    refused(lambda: fit(Regression(), (b for b in data()), cfg=QUIET), "one-shot generator")


def test_a_monitor_that_evaluate_does_not_log_is_named():
    cfg = dataclasses.replace(QUIET, monitor="ndcg")
    with pytest.raises(KeyError, match="'ndcg'"):
        fit(Regression(), data(), cfg=cfg, evaluate=lambda model: {"recall": 0.1})


def test_a_nan_loss_stops_training_naming_epoch_and_step():
    def nan_step(model, batch):
        return model(batch) * math.nan
    refused(lambda: fit(Regression(), data(), step=nan_step, cfg=QUIET), "epoch 1", "step 1")


def test_a_step_that_returns_no_scalar_is_named():
    refused(lambda: fit(Regression(), data(), step=lambda m, b: torch.ones(2), cfg=QUIET),
            "scalar loss")


@pytest.mark.parametrize("batch_size,min_batch", [(0, 1), (-4, 1), (8, 0)])
def test_shuffled_refuses_sizes_below_one(batch_size, min_batch):
    refused(lambda: shuffled(torch.arange(10), batch_size, min_batch=min_batch), "positive")


SAMPLER_CASES = {
    "a uniform sampler over padding only": (lambda: UniformSampler(1), ("n_items",)),
    "NaN popularity counts": (lambda: PopularitySampler(np.array([0, 3, np.nan])),
                              ("counts", "row 2")),
    "negative popularity counts": (lambda: PopularitySampler(np.array([0, -3, 2])),
                                   ("counts", ">= 0")),
    "counts of padding only": (lambda: PopularitySampler(np.array([5])), ("counts",)),
    "a negative alpha": (lambda: PopularitySampler(np.array([0, 1, 2]), alpha=-1), ("alpha",)),
    "NaN logQ counts": (lambda: in_batch_log_q(np.array([0, np.nan])), ("counts",)),
    "a 2-D logQ count table": (lambda: in_batch_log_q(np.ones((2, 3))), ("counts",)),
    "a window of 0": (lambda: left_pad([np.array([1, 2])], 0), ("max_len",)),
}


@pytest.mark.parametrize("case", SAMPLER_CASES)
def test_negative_samplers_and_windows_refuse(case):
    call, names = SAMPLER_CASES[case]
    refused(call, *names)
