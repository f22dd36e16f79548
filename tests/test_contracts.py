"""The Temporal boundary: every activity a workflow can schedule is declared in pairshift/contracts and
implemented once in activities/, with the declaration's name and signature."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import pytest
from temporalio import activity

import pairshift.contracts
from activities import ALL_ACTIVITIES
from pairshift.contracts import implements
from pairshift.contracts.health import RegistryHealth


def _definition_name(fn: object) -> str:
    return getattr(fn, "__temporal_activity_definition").name


def _declarations() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(pairshift.contracts.__path__):
        module = importlib.import_module(f"pairshift.contracts.{info.name}")
        for _, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and hasattr(fn, "__temporal_activity_definition"):
                found[_definition_name(fn)] = fn
    return found


def test_every_declared_activity_is_implemented_once_and_nothing_else_is_registered() -> None:
    declared = _declarations()
    registered = [_definition_name(a) for a in ALL_ACTIVITIES]
    assert sorted(registered) == sorted(set(registered)), "an activity is registered twice"
    assert set(registered) == set(declared)


@pytest.mark.parametrize("name", sorted(_declarations()))
def test_an_implementation_has_its_declarations_signature(name: str) -> None:
    impl = next(a for a in ALL_ACTIVITIES if _definition_name(a) == name)
    declaration = _declarations()[name]
    assert typing.get_type_hints(impl) == typing.get_type_hints(declaration)
    assert inspect.iscoroutinefunction(impl) == inspect.iscoroutinefunction(declaration)


def test_implements_refuses_a_signature_that_differs() -> None:
    @activity.defn
    def registry_health() -> RegistryHealth:
        raise NotImplementedError

    with pytest.raises(TypeError, match="differs from its declaration"):

        @implements(registry_health)
        def registry_health(verbose: bool) -> RegistryHealth:  # noqa: F811 - the implementation under test
            raise NotImplementedError

    with pytest.raises(TypeError, match="the names must match"):

        @implements(registry_health)
        def count_rows() -> RegistryHealth:
            raise NotImplementedError

    with pytest.raises(TypeError, match="async-ness"):

        @implements(registry_health)
        async def registry_health() -> RegistryHealth:  # noqa: F811 - the implementation under test
            raise NotImplementedError
