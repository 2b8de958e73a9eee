"""Bad settings for the synthetic generators (the world, its funnel, the impressions, the
planted histories): refused naming the setting the user gave, never an internal one."""

import dataclasses
import math

import numpy as np
import pytest
from refusals import refused

from recfunnel.data.funnel import make_world, simulate
from recfunnel.data.impressions import ImpressionConfig, make_impressions
from recfunnel.data.planted import plant_interests, planted_world
from recfunnel.data.world import WORLD_PRESETS, World

SMOKE = WORLD_PRESETS["smoke"]

WORLD_CASES = {
    "no users": ({"n_users": 0}, "WorldConfig.n_users"),
    "no days": ({"n_days": 0}, "WorldConfig.n_days"),
    "negative days": ({"n_days": -2}, "WorldConfig.n_days"),
    "no videos": ({"n_videos": 0}, "WorldConfig.n_videos"),
    "fractional users": ({"n_users": 10.5}, "WorldConfig.n_users"),
    "no topics": ({"n_topics": 0}, "WorldConfig.n_topics"),
    "no latent dimensions": ({"d_latent": 0}, "WorldConfig.d_latent"),
    "negative live streams": ({"n_live": -1}, "WorldConfig.n_live"),
    "no creators": ({"n_creators": 0}, "WorldConfig.n_creators"),
    "no requests": ({"requests_per_user_day": 0.0}, "WorldConfig.requests_per_user_day"),
    "NaN requests": ({"requests_per_user_day": math.nan}, "WorldConfig.requests_per_user_day"),
    "a growing funnel": ({"funnel": (400, 500, 60, 25, 10)}, "funnel"),
    "a funnel of four": ({"funnel": (400, 150, 60, 25)}, "funnel"),
    "a funnel with 0": ({"funnel": (400, 150, 60, 25, 0)}, "WorldConfig.funnel"),
    "negative logged samples": ({"logged": (40, 40, -1, 10, 10, 10)}, "WorldConfig.logged"),
    "negative stage noise": ({"stage_noise": (1.5, 1.0, -0.7, 0.4, 0.25, 0.15)},
                             "WorldConfig.stage_noise"),
    "a rate of 1.5": ({"rates": tuple((n, 1.5 if n == "like" else r) for n, r in SMOKE.rates)},
                      "WorldConfig.rates['like']"),
    "a rate of 0": ({"rates": tuple((n, 0.0 if n == "gift" else r) for n, r in SMOKE.rates)},
                    "WorldConfig.rates['gift']"),
    "a missing rate": ({"rates": SMOKE.rates[:-1]}, "WorldConfig.rates"),
    "a first day that is no date": ({"first_day": "2024-13-01"}, "WorldConfig.first_day"),
    "a modality of width 0": ({"modality_dims": (("visual", 0),)},
                              "WorldConfig.modality_dims['visual']"),
    "nothing shown": ({"max_shown": 0}, "WorldConfig.max_shown"),
    "an empty pool": ({"pool_size": 0}, "WorldConfig.pool_size"),
    "negative drift": ({"drift": -0.1}, "WorldConfig.drift"),
    "informativeness 2": ({"modality_informativeness": 2.0}, "modality_informativeness"),
    "a negative seed": ({"seed": -1}, "WorldConfig.seed"),
}


@pytest.mark.parametrize("case", WORLD_CASES)
def test_world_config_refuses(case):
    changes, name = WORLD_CASES[case]
    refused(lambda: dataclasses.replace(SMOKE, **changes), name)


def test_make_world_names_an_unknown_preset_and_field():
    refused(lambda: make_world("unknown"), "preset", "'unknown'", "smoke")  # was a KeyError
    refused(lambda: make_world(3), "preset", "int")
    refused(lambda: make_world("smoke", n_userz=10), "'n_userz'")
    refused(lambda: make_world("smoke", n_users=0), "WorldConfig.n_users")


@pytest.mark.parametrize("batch_requests", [0, -1, 2.5, None])
def test_simulate_refuses_a_bad_batch_size(batch_requests):
    world = World.build(SMOKE)
    refused(lambda: simulate(world, batch_requests=batch_requests, progress=False),
            "batch_requests")


def test_the_batch_size_is_part_of_the_seed_as_documented():
    world = World.build(dataclasses.replace(SMOKE, n_days=1, n_users=16))
    a = simulate(world, batch_requests=16, progress=False).rows["2024-01-13"]
    b = simulate(world, batch_requests=16, progress=False).rows["2024-01-13"]
    c = simulate(world, batch_requests=8, progress=False).rows["2024-01-13"]
    assert a.equals(b)  # same seed, same batch size: the same log
    assert not a.equals(c)  # another batch size: another draw, as simulate's docstring says
    assert "batch_requests" in simulate.__doc__ and "part of the seed" in simulate.__doc__


IMPRESSION_CASES = {
    "five items": ({"n_items": 5}, "ImpressionConfig.n_items"),
    "no users": ({"n_users": 0}, "ImpressionConfig.n_users"),
    "no impressions": ({"n_impressions": 0}, "ImpressionConfig.n_impressions"),
    "one duration bucket": ({"duration_buckets": 1}, "ImpressionConfig.duration_buckets"),
    "no task rank": ({"task_rank": 0}, "ImpressionConfig.task_rank"),
    "NaN conflict": ({"conflict": math.nan}, "ImpressionConfig.conflict"),
    "no test days": ({"test_days": 0}, "ImpressionConfig.test_days"),
    "too few days": ({"n_days": 3}, "training days"),
    "a rate of 1": ({"rates": (("click", 1.0),) + ImpressionConfig().rates[1:]}, "rate"),
}


@pytest.mark.parametrize("case", IMPRESSION_CASES)
def test_impression_config_refuses(case):
    changes, name = IMPRESSION_CASES[case]
    refused(lambda: ImpressionConfig(**changes), name)


def test_a_small_catalogue_of_impressions_is_drawn_without_an_internal_error():
    # before: n_items=500 failed with a message about a funnel the user never set
    data = make_impressions(ImpressionConfig(n_users=50, n_items=500, n_impressions=2_000))
    assert len(data) == 2_000 and data.features[:, 1].max() < 500


def test_a_small_planted_world_builds():
    # before: planted_world(10, 200, 5) failed with "funnel must be 5 non-increasing sizes"
    world = World.build(planted_world(10, 200, 5))
    histories = plant_interests(world, length=20)
    assert len(histories.interactions) == 200


@pytest.mark.parametrize("args,name", [((0, 200, 5), "n_users"), ((10, 40, 5), "n_items"),
                                       ((10, 200, 0), "n_topics"), ((10, 200.5, 5), "n_items")])
def test_planted_world_refuses(args, name):
    refused(lambda: planted_world(*args), name)


@pytest.mark.parametrize("kwargs,name", [({"length": 2}, "length"),
                                         ({"interests": (0, 3)}, "interests"),
                                         ({"interests": (3, 2)}, "interests"),
                                         ({"stickiness": 1.0}, "stickiness")])
def test_plant_interests_refuses(kwargs, name):
    world = World.build(planted_world(10, 200, 5))
    refused(lambda: plant_interests(world, **{"length": 20, **kwargs}), name)


def test_the_world_is_the_same_for_the_same_seed():
    a, b = World.build(SMOKE), World.build(SMOKE)
    assert np.array_equal(a.item_latent, b.item_latent)


@pytest.mark.parametrize("test_days,name", [(0, "test_days"), (-1, "test_days"),
                                            (1.5, "test_days"), (4, "no training")])
def test_impressions_split_refuses(test_days, name):
    data = make_impressions(ImpressionConfig(n_users=20, n_items=50, n_impressions=500,
                                             n_days=5, test_days=1))
    refused(lambda: data.split(test_days), name)


EXPOSURE_CASES = {
    "no users": ({"n_users": 0}, "ExposureConfig.n_users"),
    "streams of 5": ({"length": 5}, "ExposureConfig.length"),
    "too few items per topic": ({"n_items": 100, "n_topics": 32}, "ExposureConfig.n_items"),
    "a negative hop": ({"hop": -1.0}, "ExposureConfig.hop"),
    "a click rate of 1": ({"click_rate": 1.0}, "ExposureConfig.click_rate"),
    "no test period": ({"train": 0.8, "valid": 0.2}, "ExposureConfig.train"),
    "NaN taste": ({"taste": math.nan}, "ExposureConfig.taste"),
}


@pytest.mark.parametrize("case", EXPOSURE_CASES)
def test_exposure_config_refuses(case):
    from recfunnel.data.exposures import ExposureConfig

    changes, name = EXPOSURE_CASES[case]
    refused(lambda: ExposureConfig(**changes), name)
