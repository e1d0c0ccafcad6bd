"""Command-line settings as frozen dataclasses: each field is one flag, with its default, help and check.

A command builds its parser from these classes (:func:`add_flags`), builds them from what was
parsed (:func:`from_flags`) and stores them in its run directory's ``config.json``
(:func:`as_flags`). Nothing else writes a setting's name, default or valid range::

    @dataclass(frozen=True, kw_only=True)
    class Optimisation:
        \"\"\"optimisation\"\"\"

        lr: float = flag(0.02, "learning rate", check=Check(lambda value: value > 0, "> 0"))

gives ``--lr`` (``type=float``, ``default=0.02``, help "learning rate (default: 0.02)" in the
section "optimisation", the docstring's first line) and refuses ``--lr 0`` with "Expected --lr
to be > 0, but got 0.0". A class's ``flag_prefix`` (e.g. ``"advt_"``) is put before its fields'
names on the command line and in ``config.json``. A class whose fields are such classes (a
*config*, e.g. ``TrainingConfig``) stands for all of their flags.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch

T = TypeVar("T")


class Check(NamedTuple):
    """What a flag's value must satisfy (None, an optional flag left out, always does)."""

    holds: Callable[[Any], bool]
    expected: str
    """Completes "Expected --flag to be ...", e.g. ">= 1"."""


AT_LEAST_ONE = Check(lambda value: value >= 1, ">= 1")


@dataclass(frozen=True)
class _Flag:
    help: str
    check: Check | None
    per_dataset: Mapping[str, Any] | None
    """Defaults by data set; the field's default applies to the others (``dataclasses.MISSING``: none, the flag must be given)."""
    shown: str | None
    """The default as the help states it, where the value alone says too little."""
    group: str | None
    """The help section, if not the class's (its docstring's first line)."""
    options: dict[str, Any]
    """The rest of ``argparse.add_argument``'s arguments (``type`` inferred from the default when missing)."""


def flag(
    default: Any,
    help: str,
    *,
    check: Check | None = None,
    per_dataset: Mapping[str, Any] | None = None,
    shown: str | None = None,
    group: str | None = None,
    **options: Any,
) -> Any:
    """A dataclass field that is the flag ``--<prefix><name>`` (underscores as hyphens).

    ``default=dataclasses.MISSING`` with ``per_dataset``: no default beyond those data sets (and
    none when the class is built directly).
    """
    return field(default=default, metadata={"flag": _Flag(help, check, per_dataset, shown, group, options)})


def device_flag(help: str) -> Any:
    """``--device cpu|cuda`` (default cpu), refusing cuda where torch sees no CUDA device."""
    on_this_machine = Check(lambda device: device == "cpu" or torch.cuda.is_available(), "cpu, as torch.cuda.is_available() is False")
    return flag("cpu", help, check=on_this_machine, choices=("cpu", "cuda"))


def flag_name(settings: type, name: str) -> str:
    """``"--advt-eps"`` for the field ``eps`` of a class whose ``flag_prefix`` is ``"advt_"``."""
    return "--" + _dest(settings, name).replace("_", "-")


def _dest(settings: type, name: str) -> str:
    return getattr(settings, "flag_prefix", "") + name


def _flags(settings: type) -> Iterator[tuple[type, Field[Any], _Flag]]:
    """Every flag of ``settings``, a config's sections' in order."""
    hints = typing.get_type_hints(settings)
    for item in fields(settings):
        if "flag" in item.metadata:
            yield settings, item, item.metadata["flag"]
        else:
            yield from _flags(hints[item.name])


def add_flags(parser: argparse.ArgumentParser, *settings: type, defaults: bool = True) -> None:
    """Add a flag per field of each class of ``settings``, grouped by its docstring's first line (or the field's ``group``).

    ``defaults=False``: a flag left out is absent from the parsed namespace (``argparse.SUPPRESS``),
    so the result holds only what the command line gave.
    """
    groups: dict[str, Any] = {}
    for settings_class in settings:
        for owner, item, spec in _flags(settings_class):
            title = spec.group or (owner.__doc__ or owner.__name__).strip().splitlines()[0]
            if title not in groups:
                groups[title] = parser.add_argument_group(title)
            default = None if spec.per_dataset is not None else item.default
            groups[title].add_argument(
                flag_name(owner, item.name),
                dest=_dest(owner, item.name),
                default=(list(default) if isinstance(default, tuple) else default) if defaults else argparse.SUPPRESS,
                help=spec.help + _default_text(item.default, spec),
                **_options(item.default, spec),
            )


def _options(default: Any, spec: _Flag) -> dict[str, Any]:
    """``add_argument``'s options, ``type`` taken from the default where not given."""
    options = dict(spec.options)
    if "type" not in options and "action" not in options and default is not None and default is not MISSING:
        sample = default[0] if isinstance(default, (list, tuple)) else default
        options["type"] = Path if isinstance(sample, Path) else type(sample)
    return options


def _default_text(default: Any, spec: _Flag) -> str:
    if spec.shown is not None:
        return f" (default: {spec.shown})"
    if spec.per_dataset is not None:
        parts = [f"{name}: {_shown(value)}" for name, value in spec.per_dataset.items()]
        return f" (default: {'; '.join(parts)}{'' if default is MISSING else f'; others: {_shown(default)}'})"
    if default is None or spec.options.get("action") == "store_true":
        return ""
    return f" (default: {_shown(default)})"


def _shown(value: Any) -> str:
    """A default as it would be typed: lists space-separated."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(_shown, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def from_flags(settings: type[T], flags: Mapping[str, Any], *, dataset: str | None = None) -> T:
    """``settings`` (a settings class or a config of them) from parsed flags or a stored ``config.json``'s.

    Fills in the defaults of ``dataset`` and checks every value; raises ValueError naming the
    flag for a value its check refuses, or for a flag without a default for ``dataset``.
    """
    hints = typing.get_type_hints(settings)
    values = {}
    for item in fields(settings):
        if "flag" not in item.metadata:
            values[item.name] = from_flags(hints[item.name], flags, dataset=dataset)
            continue
        spec: _Flag = item.metadata["flag"]
        if _dest(settings, item.name) not in flags:
            # A run directory's config.json written before the flag existed.
            raise ValueError(f"Expected the settings to hold {flag_name(settings, item.name)}, which they lack (stored by an older version of this code?)")
        value = flags[_dest(settings, item.name)]
        if value is None and spec.per_dataset is not None:
            value = spec.per_dataset.get(dataset, item.default)
            if value is MISSING:
                raise ValueError(
                    f"Expected {flag_name(settings, item.name)} to be given for data set {dataset!r}, which has no default "
                    f"(defaults for {list(spec.per_dataset)})"
                )
        if isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, str) and _options(item.default, spec).get("type") is Path:
            value = Path(value)
        if value is not None and spec.check is not None and not spec.check.holds(value):
            shown = list(value) if isinstance(value, tuple) else value
            raise ValueError(f"Expected {flag_name(settings, item.name)} to be {spec.check.expected}, but got {shown}")
        values[item.name] = value
    return settings(**values)


def as_flags(settings: Any) -> dict[str, Any]:
    """The flags of a settings instance (or a config), JSON-ready (paths as strings, tuples as lists), keyed as ``config.json`` stores them."""
    flags: dict[str, Any] = {}
    for item in fields(settings):
        value = getattr(settings, item.name)
        if "flag" not in item.metadata and is_dataclass(value):
            flags.update(as_flags(value))
        elif isinstance(value, Path):
            flags[_dest(type(settings), item.name)] = str(value)
        else:
            flags[_dest(type(settings), item.name)] = list(value) if isinstance(value, tuple) else value
    return flags
