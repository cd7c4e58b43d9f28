"""Dev stacks only (``dev_adopt_users``): deploy a chute file written for someone else, as its author.

Every public chute file names its author (``Chute(username="chutes", ...)``). On a real cluster a caller may only
deploy chutes of their own username. A ``chutes dev`` stack is one person's machine: there the chute is deployed
for a local user of that name (created when missing) and shared with the caller as its adopter: unlike a plain
share (calling only), the adopter watches and manages it as its owner would (events, logs, instances, scale,
delete), by its id. Admin accounts are never adopted.
"""

from __future__ import annotations

from dataclasses import dataclass

from chutes.scheduler.errors import Forbidden
from chutes.scheduler.services import Services
from chutes.scheduler.store import chutes as chutes_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.store.users import Principal


@dataclass(frozen=True, slots=True)
class Adoption:
    """A deploy made for another local user: who, and whether that user was created for it."""

    username: str
    created: bool


def foreign(principal: Principal, username: str) -> bool:
    """True when the caller deploys a chute of another username (admins may do so anywhere)."""
    return username != principal.username and not principal.is_admin


async def adopt(services: Services, username: str) -> Adoption:
    """The local user ``username``, created when missing; 403 for an admin account."""
    async with services.store.session() as session:
        user = await users_repo.get_user_by_name(session, username)
        if user is None:
            try:
                await users_repo.create_user(session, username)
            except users_repo.UserExistsError:
                pass  # created by a concurrent deploy meanwhile
            else:
                return Adoption(username, created=True)
            user = await users_repo.get_user_by_name(session, username)
        if user is not None and user.is_admin:
            raise Forbidden(
                f"the chute's username {username!r} is an admin account of this dev stack",
                "set another username in the Chute",
            )
    return Adoption(username, created=False)


async def share_with_caller(services: Services, principal: Principal, chute_id: str, adoption: Adoption) -> None:
    """Share the adopted chute with the caller and say so in the chute's events."""
    async with services.store.session() as session:
        chute = await chutes_repo.get_chute(session, chute_id)
        caller = await users_repo.get_user(session, principal.user_id)
        if chute is None or caller is None:
            return
        await chutes_repo.share(session, chute, caller, adopted=True)  # the caller manages it, as its author
    created = "created on the fly by the dev stack" if adoption.created else "already known to the dev stack"
    await services.events.record(
        chute_id,
        "owner",
        f"deployed for the local user {adoption.username!r} ({created}) and shared with {principal.username!r}",
        data={"username": adoption.username, "created": adoption.created, "shared_with": principal.username},
    )
