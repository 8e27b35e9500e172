"""One connection limiter for both mail protocols: a global cap, a per-client-IP cap, and held slots.

A slot is held for a connection whose client is not known yet (a PROXY header still to come).
"""

from __future__ import annotations

import enum


class Refusal(enum.Enum):
    """Why a connection was not admitted; each protocol words its own reply."""

    TOTAL = "total"
    PER_IP = "per_ip"


class Reservation:
    """A global slot held for one connection until its client is known (`admit`) or it goes (`cancel`)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = True


class ConnectionLimiter:
    """Counts open connections in total and per client IP.

    A connection behind a PROXY-speaking balancer first holds a reservation: it counts against the global cap while
    its header is read, but against no IP (the socket's peer is the balancer, not the client); `admit` then charges
    it to the client the header revealed. So a burst from the balancer is bounded by the global cap and the header
    timeout only, and the per-IP cap applies to the real clients.
    """

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.open = 0  # admitted connections and held reservations
        self.by_ip: dict[str, int] = {}

    def reserve(self) -> Reservation | None:
        """A global slot for a connection whose client is not known yet; None when the global cap is reached."""
        if self.open >= self.total:
            return None
        self.open += 1
        return Reservation()

    def cancel(self, reservation: Reservation) -> None:
        """Give back a reservation that was not turned into an admitted connection (no-op once admitted)."""
        if reservation.held:
            reservation.held = False
            self.open = max(0, self.open - 1)

    def admit(self, ip: str, *, exempt: bool = False, reservation: Reservation | None = None) -> Refusal | None:
        """Count a connection from `ip` (on its reservation's slot, if given); or why it is refused.

        `exempt` skips the per-IP cap (e.g. the ingress's trusted networks). A refused reservation is cancelled.
        """
        holding = reservation is not None and reservation.held
        if not holding and self.open >= self.total:
            return Refusal.TOTAL
        current = self.by_ip.get(ip, 0)
        if current >= self.per_ip and not exempt:
            if reservation is not None:
                self.cancel(reservation)
            return Refusal.PER_IP
        if holding:
            assert reservation is not None
            reservation.held = False  # the slot now belongs to the admitted connection
        else:
            self.open += 1
        self.by_ip[ip] = current + 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection from `ip` ended."""
        self.open = max(0, self.open - 1)
        left = self.by_ip.get(ip, 0) - 1
        if left > 0:
            self.by_ip[ip] = left
        else:
            self.by_ip.pop(ip, None)
