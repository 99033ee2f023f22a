"""YAML run configs with command-line overrides (``--set trainer.max_epochs=5``).

Sections map one to one onto the dataclasses of the pieces they configure, and ``trainer`` goes straight
to ``lightning.Trainer``, so every Lightning option (devices, strategy="ddp", num_nodes, precision) works.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from common.errors import SpeechpruneError


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML config and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise SpeechpruneError(f"{path}: no such config file")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SpeechpruneError(f"{path}: invalid YAML ({error})") from None
    if not isinstance(config, dict):
        raise SpeechpruneError(f"{path}: a config must be a mapping of sections")
    return apply_overrides(config, overrides or [])


def check_keys(values: dict[str, Any], known: Iterable[str], where: str) -> None:
    """Refuse keys a job would silently ignore (a typo such as ``trainr:``), naming them and the known."""
    known = set(known)
    unknown = sorted(set(values) - known)
    if unknown:
        raise SpeechpruneError(
            f"{where}: unknown {'keys' if len(unknown) > 1 else 'key'} {unknown}; known: {sorted(known)}"
        )


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for override in overrides:
        key, separator, raw_value = override.partition("=")
        if not separator or not key:
            raise SpeechpruneError(f"--set {override!r}: expected KEY=VALUE, e.g. trainer.max_epochs=5")
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise SpeechpruneError(f"--set {override!r}: {name} is not a section")
        try:
            node[leaf] = yaml.safe_load(raw_value)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or "not YAML"
            raise SpeechpruneError(f"--set {override!r}: the value is not valid YAML ({problem})") from None
    return config


def build_section(config: dict[str, Any], section: str, cls: type, **extra: Any) -> Any:
    """Instantiate ``cls`` from ``config[section]``; unknown or bad keys name the section."""
    values = {**(config.get(section) or {}), **extra}
    try:
        return cls(**values)
    except TypeError as error:
        raise SpeechpruneError(f"config section {section!r}: {error}") from None
    except ValueError as error:
        raise SpeechpruneError(str(error)) from None
