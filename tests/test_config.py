"""One config: values checked where they are made, flags made from the fields,
recipe fields marked in the dataclass."""

from __future__ import annotations

import dataclasses
from typing import Optional

import pytest

import train
from gan import cli
from gan.config import Config, ConfigError, RunOptions, recipe_fields, setting


@pytest.mark.parametrize("cls,field,value", [
    (Config, "epochs", 0), (Config, "batch_size", 0), (Config, "batch_size", -5),
    (Config, "learning_rate", 0.0), (Config, "learning_rate", -1e-3),
    (Config, "learning_rate", float("nan")), (Config, "decay_steps", 0),
    (Config, "decay_rate", 0.0), (Config, "decay_rate", 1.5), (Config, "beta1", 1.0),
    (Config, "seed", -1), (Config, "seed", 2**32), (RunOptions, "log_every", 0),
    (RunOptions, "steps_per_call", 0), (Config, "data_shards", 0),
    (Config, "compute_dtype", "float16"), (Config, "ema_decay", 1.0),
    (Config, "ema_decay", -0.1), (Config, "ema_compare", (0.9, 1.0)),
    (Config, "ema_batch_stats", "median"), (RunOptions, "max_steps", 0),
    (RunOptions, "keep", 0), (RunOptions, "checkpoint_every", -1),
    (RunOptions, "eval_every", 0),
])
def test_a_bad_value_is_refused_naming_its_setting(cls, field, value):
    with pytest.raises(ConfigError, match=f"`{field}`"):
        cls(**{field: value})


def test_settings_that_conflict_are_refused():
    with pytest.raises(ConfigError, match="`ema_compare` needs `ema_decay`"):
        Config(ema_decay=0.0, ema_compare=(0.9,))
    with pytest.raises(ConfigError, match="must differ"):
        Config(ema_decay=0.9, ema_compare=(0.9,))


def test_recipe_fields_are_the_ones_a_checkpoint_depends_on():
    """Written out here, not read from gan.config: what a resumed run must
    match. `epochs` may grow; logging, dispatch and sampling settings may change."""
    assert set(recipe_fields()) == {
        "batch_size", "learning_rate", "decay_steps", "decay_rate", "beta1", "seed",
        "data_shards", "compute_dtype", "ema_decay", "ema_compare"}


def test_no_flags_give_the_dataclass_defaults():
    assert train.parse_args([]) == (Config(), RunOptions())


def test_every_field_is_a_flag():
    """A field added to either dataclass becomes a flag with no other edit."""
    parser = cli.ArgumentParser()
    cli.add_flags(parser, Config)
    cli.add_flags(parser, RunOptions)
    flags = {a.dest: a.option_strings for a in parser._actions}
    for cls in (Config, RunOptions):
        for field in dataclasses.fields(cls):
            assert field.name in flags, field.name
    assert flags["batch_size"] == ["--batch-size"]
    assert flags["progress"] == ["--no-progress"]


def test_flags_reach_the_fields():
    config, options = train.parse_args([
        "--batch-size", "64", "--learning-rate", "1e-3", "--ema-compare", "0.9,0.999",
        "--compute-dtype", "bfloat16", "--data-shards", "2", "--decay-rate", "0.9",
        "--workdir", "w", "--max-steps", "7", "--no-progress", "--devices", "2"])
    assert config == Config(batch_size=64, learning_rate=1e-3, ema_compare=(0.9, 0.999),
                            compute_dtype="bfloat16", data_shards=2, decay_rate=0.9)
    assert options == RunOptions(workdir="w", max_steps=7, progress=False, devices=2)


def test_messages_name_flags_on_the_command_line():
    assert (cli.as_flags("`ema_compare` needs `ema_decay` above 0 in workdir x")
            == "--ema-compare needs --ema-decay above 0 in workdir x")


def test_data_shards_default_to_one_per_process():
    assert Config().with_shards(3).data_shards == 3
    assert Config(data_shards=2).with_shards(3).data_shards == 2


@dataclasses.dataclass(frozen=True)
class _Kinds:
    """Every kind of field a flag is made for, written in both spellings."""
    count: Optional[int] = setting(None, "an optional int, the typing way")
    limit: int | None = setting(None, "an optional int, the PEP 604 way")
    sizes: tuple[int, ...] = setting((1, 2), "a tuple of ints")
    rates: Optional[tuple[float, ...]] = setting(None, "an optional tuple")
    quiet: bool = setting(False, "a bool off by default")
    colour: bool = setting(True, "a bool on by default")
    name: str = setting("x", "a string")


def test_flags_come_from_the_field_types_not_their_spelling():
    parser = cli.ArgumentParser()
    cli.add_flags(parser, _Kinds)
    assert cli.settings(parser.parse_args([]), _Kinds) == _Kinds()
    given = parser.parse_args(["--count", "3", "--limit", "4", "--sizes", "5,6,7",
                               "--rates", "0.5,0.25", "--quiet", "--no-colour",
                               "--name", "y"])
    assert cli.settings(given, _Kinds) == _Kinds(3, 4, (5, 6, 7), (0.5, 0.25), True,
                                                 False, "y")
    assert type(cli.settings(given, _Kinds).sizes[0]) is int
