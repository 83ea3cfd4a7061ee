"""The list of command-group modules. Add a module name here to add its commands."""

from __future__ import annotations

import importlib
from types import ModuleType

_GROUPS: list[str] = ["eval", "ladder", "datasets", "index", "train", "mlm", "elmo", "sentence", "encode", "vectors", "serve", "monitor"]


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"embedstack.cli.{name}") for name in _GROUPS]
