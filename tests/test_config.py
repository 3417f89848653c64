"""One source of names and flags: the config checks the registries, and every field has a flag."""

import argparse
import dataclasses

import pytest

from mnist_jax import config as cfg
from mnist_jax import initializers, losses, models, optim
from mnist_jax.cli import build_parser
from mnist_jax.cli.train import add_config_flags, config_from_args
from mnist_jax.config import TrainConfig
from mnist_jax.errors import UserError

REGISTRIES = {"model": models.MODELS, "dtype": models.DTYPES, "init": initializers.INITS, "loss": losses.LOSSES,
              "optimizer": optim.OPTIMIZERS, "schedule": optim.SCHEDULES}


@pytest.mark.parametrize("field", sorted(REGISTRIES))
def test_each_choice_is_its_registry(field, monkeypatch):
    """Every registered name is accepted, an unknown one refused, and a new entry needs no other edit."""
    registry = REGISTRIES[field]
    assert cfg.registries()[field] is registry
    for name in registry:
        assert getattr(TrainConfig(**{field: name}), field) == name
    with pytest.raises(UserError, match=f"--{field} must be one of {', '.join(registry)}; got 'nonexistent'"):
        TrainConfig(**{field: "nonexistent"})
    monkeypatch.setitem(registry, "brand_new", registry[next(iter(registry))])
    assert getattr(TrainConfig(**{field: "brand_new"}), field) == "brand_new"


def test_every_field_is_documented_and_has_a_flag_with_that_help():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    flags = {action.dest: action for action in parser._actions}
    for field in dataclasses.fields(TrainConfig):
        assert cfg.field_docs()[field.name], field.name
        assert cfg.flag(field.name) in flags[field.name].option_strings
        assert flags[field.name].help.startswith(cfg.field_docs()[field.name])


def test_flags_set_fields_with_their_types_and_unset_flags_keep_the_defaults():
    args = build_parser().parse_args(["train", "--lr", "0.01", "--epochs", "7", "--data-dir", "/x", "--fast-compile",
                                      "--optimizer", "sgd"])
    config = config_from_args(args)
    assert (config.learning_rate, config.epochs, config.data_dir, config.fast_compile, config.optimizer) == (
        0.01, 7, "/x", True, "sgd")
    assert config.replace(learning_rate=3e-3, epochs=3, data_dir=None, fast_compile=False,
                          optimizer="adam") == TrainConfig()


def test_a_registered_name_outside_the_choices_is_a_flag_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--optimizer", "adamx"])
    assert exit_info.value.code == 2 and "invalid choice: 'adamx'" in capsys.readouterr().err


@pytest.mark.parametrize("changes, message", [
    ({"learning_rate": float("nan")}, "--learning-rate must be a finite number"),
    ({"learning_rate": float("inf")}, "--learning-rate must be a finite number"),
    ({"label_smoothing": float("nan")}, "--label-smoothing must be a finite number"),
    ({"seed": -1}, "--seed must be from 0 to 2147483647"),
    ({"seed": 2**40}, "--seed is out of range"),
    ({"epochs": 2**31}, "--epochs is out of range"),
    ({"batch_size": 0}, "--batch-size must be a positive integer"),
])
def test_numbers_outside_their_range_are_one_sentence(changes, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**changes)


@pytest.mark.parametrize("field, value, message", [
    ("rotation", -1.0, "--rotation must be from 0 to 180"), ("zoom", 1.0, "--zoom must be in"),
    ("shift", -0.1, "--shift must be in"), ("ema", 1.0, "--ema must be in")])
def test_augmentation_and_average_ranges_are_checked(field, value, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**{field: value})
