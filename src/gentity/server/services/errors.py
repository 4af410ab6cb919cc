"""What services raise when they refuse or fail a request, in the domain's words.

Services know nothing of HTTP: ``server.errors`` maps each kind to a status in one table.
Every message is safe to show the caller as it is.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request that a service refused or could not carry out."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """The request itself is wrong (a field names something unknown, a value is out of range)."""


class Unauthenticated(DomainError):
    """The credentials given do not identify anyone (a wrong password, a disabled account)."""


class Forbidden(DomainError):
    """The caller is known but this is not allowed (sign-up is closed)."""


class NotFound(DomainError):
    """Nothing of the caller's by that id: missing and someone else's look the same."""

    def __init__(self, message: str = "Not Found") -> None:
        super().__init__(message)


class Conflict(DomainError):
    """Not possible in the current state (stopping a stopped instance, a taken email)."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds after which the same request may succeed, when the conflict is passing."""


class Mismatch(DomainError):
    """The request contradicts an earlier one it claims to repeat (a reused Idempotency-Key)."""


class RateLimited(DomainError):
    """Too many attempts; the caller may try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamFailed(DomainError):
    """A machine, its provider or its guest failed; the message says what they reported."""


class Unavailable(DomainError):
    """The service cannot do it right now; retrying shortly may work."""
