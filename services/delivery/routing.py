"""Alias and catch-all expansion with a depth limit, and the split of final recipients into local and remote."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.delivery import outcome
from services.delivery.outcome import RecipientOutcome
from services.store import Accounts
from services.store.keys import normalize_address
from shared.srs import Srs


@dataclass(frozen=True)
class Target:
    """A final recipient and the envelope recipient it came from."""

    address: str
    original: str
    local: bool

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def forwarded(self) -> bool:
        """Reached through an alias, a catch-all or an SRS address rather than named by the envelope."""
        return self.address != normalize_address(self.original)


@dataclass
class Plan:
    """Where each recipient of a message goes: local mailboxes, remote domains, or nowhere (with the reason)."""

    local: list[Target] = field(default_factory=list)
    remote: dict[str, list[Target]] = field(default_factory=dict)
    failed: list[RecipientOutcome] = field(default_factory=list)


def _plausible(address: str) -> bool:
    """local@domain without spaces or control characters; the ingress checked more, this guards the DNS path."""
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and address.isprintable() and not any(c.isspace() for c in address)


class _TooDeep(Exception):
    pass


class Router:
    """Expands recipients through the store's aliases; a loop or a chain deeper than the limit ends the branch."""

    def __init__(self, accounts: Accounts, depth_limit: int, srs: Srs | None = None) -> None:
        self.accounts = accounts
        self.depth_limit = depth_limit
        self.srs = srs

    async def plan(self, recipients: tuple[str, ...]) -> Plan:
        plan = Plan()
        seen: set[str] = set()
        # Every recipient expanded at once: with the delivery's coalescing store their lookups share round trips.
        # A lone recipient (most mail) is awaited as it is: gather would wrap it in a task of its own.
        roots = [self._expand_root(r) for r in recipients if _plausible(r)]
        expanded = iter([await roots[0]] if len(roots) == 1 else await asyncio.gather(*roots))
        for original in recipients:
            if not _plausible(original):
                plan.failed.append(outcome.permanent(original, "5.1.3", "bad destination mailbox address syntax"))
                continue
            finals = next(expanded)
            if finals is None:
                plan.failed.append(
                    outcome.permanent(original, "5.4.6", "alias expansion deeper than the limit (mail loop?)")
                )
                continue
            if not finals:
                plan.failed.append(outcome.permanent(original, "5.4.6", "alias expands to no recipient (loop)"))
                continue
            for address, local in finals:
                # Two envelope recipients expanding to one mailbox get one copy (RFC 5321 §3.7.2 leaves it to us).
                if address in seen:
                    continue
                seen.add(address)
                target = Target(address, original, local)
                if local:
                    plan.local.append(target)
                else:
                    plan.remote.setdefault(target.domain, []).append(target)
        return plan

    async def _expand(self, address: str, path: tuple[str, ...]) -> list[tuple[str, bool]]:
        # One round trip for everything routing needs to know about the address (Accounts.lookup).
        facts = await self.accounts.lookup(address)
        if not facts.local_domain:
            return [(address, False)]
        if len(path) >= self.depth_limit:
            raise _TooDeep
        targets = facts.aliases
        if targets is None and not facts.user and self.srs is not None:
            # A bounce to the SRS address a forwarded copy went out with: it goes to the original sender.
            original = self.srs.reverse(address)
            if original is not None:
                return await self._expand(normalize_address(original), (*path, address))
        if targets is None and not facts.user:
            targets = facts.catch_all  # catch-all, only for non-users
        if targets is None:
            # A user, or nobody: local delivery answers NO_MAILBOX (5.1.1) for the latter.
            return [(address, True)]

        async def branch(target: str) -> list[tuple[str, bool]]:
            if target == address or target in path:
                # An alias naming itself (or an ancestor) keeps a copy in that mailbox if one exists, as Postfix does.
                exists = facts.user if target == address else await self.accounts.user_exists(target)
                return [(target, True)] if exists else []
            return await self._expand(target, (*path, address))

        # The targets of one alias expanded at once, for the same reason as the recipients; order is kept.
        groups = await asyncio.gather(*(branch(normalize_address(t)) for t in targets))
        return [final for group in groups for final in group]

    async def _expand_root(self, original: str) -> list[tuple[str, bool]] | None:
        """The final recipients of an envelope recipient; None when the expansion is deeper than the limit."""
        try:
            return await self._expand(normalize_address(original), ())
        except _TooDeep:
            return None
