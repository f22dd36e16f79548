"""People: the humans who request and approve migrations, one entry joining each human's identities.

A decision reaches pairshift through a channel that names its sender its own way: a Slack user id from a
verified click, a string typed after ``--as`` on the CLI, the identity a Temporal client or the Web UI
records. A :class:`Person` (the config's ``people:`` section) joins those names, so approver lists and
separation of duties compare *persons*: bob cannot approve his own migration by clicking as his Slack user.

This module is pure (pydantic only) so that workflows may import it; :func:`load_people` reads the registry
and is for activities, the API and the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

Channel = Literal["slack", "cli", "temporal-ui"]
CHANNELS: tuple[Channel, ...] = ("slack", "cli", "temporal-ui")
IDENTITY_FIELDS = ("slack", "email", "temporal")


class Person(BaseModel):
    """One human: a name that policies use, and the identities each channel knows them by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        ..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$", description="Named by policies."
    )
    slack: str | None = Field(
        None, pattern=r"^[UW][A-Z0-9_]{2,30}$", description="Slack user id (what a verified click carries)."
    )
    email: str | None = Field(
        None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$", description="Email address (stored lower-case)."
    )
    temporal: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The identity Temporal records for this person's client or Web UI session.",
    )

    @field_validator("email")
    @classmethod
    def _lower(cls, v: str | None) -> str | None:
        return v.lower() if v else v

    def identities(self) -> set[str]:
        """Every name this person goes by, case-folded."""
        return {i.casefold() for i in (self.name, self.slack, self.email, self.temporal) if i}


class People(BaseModel):
    """The registry's people, as a lookup from any identity to its person."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    people: tuple[Person, ...] = ()

    @model_validator(mode="after")
    def _one_person_per_identity(self) -> People:
        owner: dict[str, str] = {}
        for p in self.people:
            for identity in p.identities():
                other = owner.setdefault(identity, p.name)
                if other != p.name:
                    raise ValueError(f"identity {identity!r} belongs to both {other} and {p.name}")
        return self

    def find(self, identity: str | None) -> Person | None:
        """The person ``identity`` names (name, Slack id, email or Temporal identity); None for a stranger."""
        if not identity:
            return None
        folded = identity.casefold()
        return next((p for p in self.people if folded in p.identities()), None)

    def key(self, identity: str) -> str:
        """The person's name when the identity is known, else the identity itself (case-folded)."""
        person = self.find(identity)
        return person.name if person else identity.casefold()

    def same(self, a: str, b: str) -> bool:
        """Whether one person is behind both identities (plain equality, case-folded, for strangers)."""
        return self.key(a) == self.key(b)

    def names(self) -> set[str]:
        return {p.name for p in self.people}


def people_from(rows: Iterable[Person]) -> People:
    return People(people=tuple(sorted(rows, key=lambda p: p.name)))


def load_people(session: Session) -> People:
    """Everyone in the registry (for activities, the API and the CLI; never from workflow code)."""
    from sqlalchemy import select

    from pairshift.registry.models import PersonRow

    rows = session.scalars(select(PersonRow)).all()
    return people_from(Person(name=r.name, slack=r.slack, email=r.email, temporal=r.temporal) for r in rows)
