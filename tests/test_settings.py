"""The commands' flags as dataclasses (``huang2021/settings.py``): one field makes the flag, its
default (also by data set), help and check, and ``config.json`` round-trips every config."""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from huang2021.evaluation.diversity_analysis import DiversitySettings
from huang2021.evaluation.robustness import EvaluationConfig
from huang2021.settings import AT_LEAST_ONE, Check, add_flags, as_flags, flag, from_flags
from huang2021.training.config import Session, TrainingConfig


@dataclass(frozen=True, kw_only=True)
class Toy:
    """toy section"""

    flag_prefix: ClassVar[str] = "toy_"

    steps: int = flag(10, "iterations", check=AT_LEAST_ONE)
    eps: tuple[float, ...] = flag((0.1, 0.2), "bounds", nargs="+")
    root: Path = flag(Path("data"), "a folder")
    epochs: int = flag(MISSING, "epochs", per_dataset={"digits": 30, "cifar100": 150}, type=int)
    limit: int | None = flag(None, "images", per_dataset={"digits": 100}, type=int)
    rate: float = flag(0.5, "a keep rate", check=Check(lambda value: 0.0 <= value <= 1.0, "in [0, 1]"), group="other section")


@dataclass(frozen=True, kw_only=True)
class ToyConfig:
    toy: Toy


def parse(argv: list[str], *, defaults: bool = True) -> dict:
    parser = argparse.ArgumentParser()
    add_flags(parser, Toy, defaults=defaults)
    return vars(parser.parse_args(argv))


def test_a_field_is_a_flag_with_its_type_default_and_prefix():
    flags = parse(["--toy-steps", "3", "--toy-eps", "0.3", "--toy-root", "elsewhere"])
    assert flags == {"toy_steps": 3, "toy_eps": [0.3], "toy_root": Path("elsewhere"), "toy_epochs": None, "toy_limit": None, "toy_rate": 0.5}
    assert parse([])["toy_eps"] == [0.1, 0.2]
    assert parse(["--toy-rate", "1"], defaults=False) == {"toy_rate": 1.0}


def test_the_help_states_each_default_under_its_section(capsys):
    parser = argparse.ArgumentParser()
    add_flags(parser, Toy)
    parser.print_help()
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("toy section:", "other section:", "iterations (default: 10)", "bounds (default: 0.1 0.2)",
                   "epochs (default: digits: 30; cifar100: 150)", "images (default: digits: 100; others: None)"):
        assert phrase in text


def test_defaults_by_data_set_and_checks_name_the_flag():
    toy = from_flags(Toy, parse([]), dataset="digits")
    assert (toy.epochs, toy.limit, toy.eps, toy.root) == (30, 100, (0.1, 0.2), Path("data"))
    assert from_flags(Toy, parse(["--toy-epochs", "2"]), dataset="digits").epochs == 2
    assert from_flags(Toy, parse(["--toy-epochs", "5"]), dataset="mnist").limit is None
    with pytest.raises(ValueError, match="Expected --toy-epochs to be given for data set 'mnist'"):
        from_flags(Toy, parse([]), dataset="mnist")
    with pytest.raises(ValueError, match=r"Expected --toy-steps to be >= 1, but got 0"):
        from_flags(Toy, parse(["--toy-steps", "0"]), dataset="digits")
    with pytest.raises(ValueError, match=r"Expected --toy-rate to be in \[0, 1\], but got 1.5"):
        from_flags(Toy, parse(["--toy-rate", "1.5"]), dataset="digits")


def test_a_config_stands_for_its_sections_and_round_trips_through_json():
    config = from_flags(ToyConfig, parse(["--toy-eps", "0.4"]), dataset="cifar100")
    stored = json.loads(json.dumps(as_flags(config)))
    assert stored["toy_eps"] == [0.4] and stored["toy_root"] == "data" and stored["toy_epochs"] == 150
    assert from_flags(ToyConfig, stored, dataset="cifar100") == config


@pytest.mark.parametrize(("settings", "argv"), [((TrainingConfig, Session), ["--methods", "pdd", "--advt-eps", "0.02"]), ((DiversitySettings,), ["--threshold", "1"])])
def test_the_commands_settings_round_trip(settings, argv):
    parser = argparse.ArgumentParser()
    add_flags(parser, *settings)
    flags = vars(parser.parse_args(argv))
    built = [from_flags(section, flags, dataset="digits") for section in settings]
    stored = json.loads(json.dumps({key: value for section in built for key, value in as_flags(section).items()}))
    assert [from_flags(section, stored, dataset="digits") for section in settings] == built


def test_the_evaluation_settings_take_the_data_sets_paper_parameters():
    parser = argparse.ArgumentParser()
    add_flags(parser, EvaluationConfig)
    flags = vars(parser.parse_args(["--pgd-eps", "0.03,0.06"]))
    cifar = from_flags(EvaluationConfig, flags, dataset="cifar100")
    assert cifar.parameters.fgsm_eps == (0.02, 0.04) and cifar.parameters.pgd_eps == (0.03, 0.06)
    assert (cifar.settings.cw_steps, cifar.run.limit) == (1000, None)
    with pytest.raises(ValueError, match="--fgsm-eps"):
        from_flags(EvaluationConfig, flags, dataset="svhn")


def test_stored_settings_missing_a_flag_are_refused_naming_it():
    """A run directory's config.json written before a flag existed: a ValueError naming the flag, not a KeyError."""
    parser = argparse.ArgumentParser()
    add_flags(parser, TrainingConfig)
    stored = as_flags(from_flags(TrainingConfig, vars(parser.parse_args([])), dataset="digits"))
    del stored["robust_steps"]
    with pytest.raises(ValueError, match="--robust-steps"):
        from_flags(TrainingConfig, stored, dataset="digits")
