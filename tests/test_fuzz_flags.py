"""Property-based tests of the train flags: any value ends in a configuration and a network, or one sentence.

Nothing trains here: what is checked is everything a flag's value meets before the first step (argparse, the
configuration's checks, building the network and checking it fits the device).
"""

import dataclasses
import math

from hypothesis import given
from hypothesis import strategies as st

from mnist_jax.cli import build_parser
from mnist_jax.cli.train import config_from_args
from mnist_jax.config import TrainConfig, flag
from mnist_jax.errors import UserError
from mnist_jax.models import model_from_config
from tests.test_fuzz import FUZZ, assert_one_sentence

FIELDS = {field.name: field for field in dataclasses.fields(TrainConfig)}
NUMBERS = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "0x10", "", " 3", "3.5", "1_000"]))
VALUES = {name: NUMBERS if field.type in (int, float) else st.text(max_size=12)
          for name, field in FIELDS.items() if field.type is not bool}


@FUZZ
@given(names=st.lists(st.sampled_from(sorted(VALUES)), unique=True, max_size=4), data=st.data())
def test_any_flag_values_give_a_network_or_one_sentence(names, data):
    argv = ["train", *(f"{flag(name)}={data.draw(VALUES[name])}" for name in names)]  # "=": values may start "-"
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: a value of the wrong type or not a choice, one usage error
        assert exit_.code == 2
        return
    try:
        config = config_from_args(args)
        model = model_from_config(config)
    except UserError as error:
        assert_one_sentence(error)
        return
    for name in names:
        value = getattr(config, name)
        assert not isinstance(value, float) or math.isfinite(value)
    assert model is not None
