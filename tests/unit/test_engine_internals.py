"""The engine's list of private Faust/aiokafka names: complete, and true of the installed versions."""

from __future__ import annotations

import ast
import importlib
import inspect
from importlib import metadata
from pathlib import Path
from typing import Any

import aiokafka
import faust
import pytest

import likeflow.engine
from likeflow.engine import delivery, faust_tables, internals, membership, outputs, recovery, state
from likeflow.engine.internals import PRIVATE_NAMES, PrivateName

ENGINE = Path(likeflow.engine.__file__).parent
LISTED = {p.name for p in PRIVATE_NAMES}
# The harness stands in for Faust's objects; it touches no private name of theirs.
NOT_BENDING = {"internals.py", "testing.py", "__init__.py"}
LIBRARIES = ("faust", "aiokafka", "mode")


def test_the_versions_the_engine_was_written_for_are_installed() -> None:
    assert metadata.version("faust-streaming") == internals.FAUST_VERSION == faust.__version__
    assert metadata.version("aiokafka") == internals.AIOKAFKA_VERSION == aiokafka.__version__


def _owner(spec: str) -> Any:
    module_name, _, cls = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls) if cls else module


def _defines(owner: Any, name: str) -> bool:
    """Whether `owner` has `name`: as an attribute, or as an instance attribute its code sets."""
    if hasattr(owner, name):
        return True
    if not inspect.isclass(owner):
        return False
    for klass in owner.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if f"self.{name} =" in source or f"self.{name}:" in source or f"    {name}:" in source:
            return True
    return False


@pytest.mark.parametrize("private", PRIVATE_NAMES, ids=lambda p: f"{p.owner}.{p.name}")
def test_each_listed_name_exists_in_the_installed_packages(private: PrivateName) -> None:
    owner = _owner(private.owner)
    assert _defines(owner, private.name), f"{private.owner} has no {private.name}: re-read {private.where}"
    if private.use in ("override", "call"):
        assert callable(getattr(owner, private.name))
    assert (ENGINE / f"{private.where}.py").exists()


def _own_names(tree: ast.AST) -> set[str]:
    """Private names an engine module defines itself: its functions, class attributes, and what
    it assigns to `self`."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def unlisted_names(modules: dict[str, ast.Module]) -> list[str]:
    """Private Faust/aiokafka names `modules` (file -> tree) touch that neither the engine defines
    itself nor `internals.PRIVATE_NAMES` lists, as "file:line name"."""
    own = set().union(*(_own_names(tree) for tree in modules.values()))
    unlisted: list[str] = []
    for file, tree in modules.items():
        if file in NOT_BENDING:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
                continue  # os._exit
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own | LISTED:
                unlisted.append(f"{file}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
                unlisted += [
                    f"{file}:{node.lineno} {a.name}"
                    for a in node.names
                    if _private(a.name) and a.name not in LISTED
                ]
    return unlisted


def engine_modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text()) for p in sorted(ENGINE.glob("*.py"))}


def test_the_engine_touches_no_private_name_that_is_not_listed() -> None:
    unlisted = unlisted_names(engine_modules())
    assert not unlisted, f"add these to likeflow/engine/internals.py: {unlisted}"


def test_the_check_reports_a_private_attribute_and_a_private_import_nobody_listed() -> None:
    """The source check is not vacuous: a new module reaching into Faust is reported."""
    bending = ast.parse(
        "from faust.transport.consumer import _new_offset_helper\n"
        "def f(app):\n"
        "    return app.consumer._active_partitions\n"
    )
    found = unlisted_names({**engine_modules(), "bending.py": bending})
    assert sorted(found) == ["bending.py:1 _new_offset_helper", "bending.py:3 ._active_partitions"]


def test_every_override_of_a_private_method_is_listed() -> None:
    overrides: list[str] = []
    for module in (delivery, recovery, state, outputs, faust_tables, membership):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            bases = [b for b in cls.__mro__[1:] if b.__module__.split(".")[0] in LIBRARIES]
            overrides += [
                f"{cls.__name__}.{name}"
                for name, value in vars(cls).items()
                if _private(name)
                and callable(value)
                and any(name in vars(b) for b in bases)
                and name not in LISTED
            ]
    assert not overrides, f"add these to likeflow/engine/internals.py: {overrides}"
