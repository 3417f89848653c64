"""Named recipes: valid configurations, one source for the speedrun, and `train --recipe` under explicit flags."""

import dataclasses

import pytest

from mnist_jax import speedrun
from mnist_jax.cli import build_parser
from mnist_jax.cli.train import _recipe, config_from_args
from mnist_jax.config import TrainConfig
from mnist_jax.errors import UserError
from mnist_jax.recipes import RECIPES, recipe_config


def test_the_required_recipes_exist_and_name_only_known_fields():
    assert {"article", "speedrun", "best"} <= set(RECIPES)
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    for name, values in RECIPES.items():
        assert set(values) <= fields, name
        assert recipe_config(name).to_dict() == TrainConfig().to_dict() | values  # and validates


def test_the_article_recipe_is_the_articles_optimizer_and_the_speedrun_uses_its_recipe():
    article = recipe_config("article")
    assert (article.model, article.optimizer, article.learning_rate, article.schedule) == ("cnn", "adam", 1e-3,
                                                                                           "constant")
    assert speedrun.RECIPE == recipe_config("speedrun")


def test_flags_override_the_recipe():
    args = build_parser().parse_args(["train", "--recipe", "best", "--epochs", "2", "--seed", "3"])
    config = config_from_args(args, _recipe(args))
    assert (config.model, config.ema, config.epochs, config.seed) == ("bncnn", RECIPES["best"]["ema"], 2, 3)
    args = build_parser().parse_args(["train", "--epochs", "2"])
    assert config_from_args(args, _recipe(args)) == TrainConfig(epochs=2)


def test_an_unknown_recipe_is_refused():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--recipe", "fastest"])
    with pytest.raises(UserError, match="--recipe must be one of article, speedrun, best"):
        recipe_config("fastest")
