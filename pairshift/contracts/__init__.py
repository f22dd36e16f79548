"""The Temporal boundary: every type that crosses it, and every activity as a declaration the workflows call.

One module per workflow (``migration``, ``evals``, ``deprecation_scan``, ``alias_drift``, ``health``) plus the
ones they share (``notices``, ``gates``): the inputs and results of the workflow, its signals, updates and
queries, and its activities' inputs, outputs and declarations. Workflows import these modules, temporalio
and pure code (the policy schema, the queue routing of :mod:`pairshift.ratelimit`), so no workflow pulls the
registry, a provider SDK, httpx or Jinja2 into its sandbox (a test imports each workflow module in a clean
interpreter to prove it).

These modules are pydantic models and function signatures only: no I/O, no clock, nothing imported that does
I/O. A field here is a wire format recorded in workflow histories that live for days: add fields with
defaults; never rename or retype one.

An activity is declared here with ``@activity.defn`` on a body-less function (the name, argument and result
types the workflow schedules), and implemented in ``activities/`` with :func:`implements`, which registers the
implementation under the same name and refuses one whose signature differs from the declaration.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio import activity

F = TypeVar("F", bound=Callable[..., Any])


def implements(declaration: Callable[..., Any]) -> Callable[[F], F]:
    """Register the decorated function as the activity ``declaration`` declares: same name, same signature."""

    def bind(fn: F) -> F:
        if fn.__name__ != declaration.__name__:
            raise TypeError(f"activity {fn.__name__} implements {declaration.__name__}: the names must match")
        if inspect.iscoroutinefunction(fn) != inspect.iscoroutinefunction(declaration):
            raise TypeError(f"activity {fn.__name__}: async-ness differs from its declaration")
        if typing.get_type_hints(fn) != typing.get_type_hints(declaration):
            raise TypeError(
                f"activity {fn.__name__}: signature {typing.get_type_hints(fn)} differs from its "
                f"declaration {typing.get_type_hints(declaration)}"
            )
        return activity.defn(name=declaration.__name__)(fn)

    return bind
