"""Seeds, devices, the environment report and the profiles."""

import dataclasses

import numpy as np
import pytest
import torch

from recfunnel import profiles
from recfunnel.runtime import environment_report, resolve_device, set_seed


def test_set_seed_reproduces_every_generator():
    def draw():
        return (np.random.rand(), torch.rand(1).item(), __import__("random").random())

    set_seed(123)
    first = draw()
    set_seed(123)
    assert draw() == first
    set_seed(124)
    assert draw() != first


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")


def test_environment_report_names_versions_and_device():
    report = environment_report("cpu")
    assert "torch" in report and torch.__version__ in report
    assert "device      cpu" in report


def test_every_chapter_has_every_profile_and_smoke_is_smallest():
    for chapter, sizes in profiles.CHAPTER_SIZES.items():
        assert set(sizes) == set(profiles.PROFILES), chapter
        smoke, cpu = sizes["smoke"], sizes["cpu"]
        for field in dataclasses.fields(smoke):
            if field.name == "batch_size":
                continue  # a larger batch takes fewer steps: a shorter run, not a bigger one
            if field.type in (int, "int") and isinstance(getattr(smoke, field.name), int):
                assert getattr(smoke, field.name) <= getattr(cpu, field.name), field.name


def test_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(profiles.ENV_VAR, "smoke")
    assert profiles.current_profile() == "smoke"
    assert profiles.profile_for("getting_started").n_users == 300
    monkeypatch.setenv(profiles.ENV_VAR, "huge")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        profiles.current_profile()
    monkeypatch.delenv(profiles.ENV_VAR)
    assert profiles.current_profile() == "cpu"
    with pytest.raises(KeyError, match="no profiles for chapter"):
        profiles.profile_for("chapter_99")
