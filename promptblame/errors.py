"""Domain errors. Raised anywhere below the HTTP edge; `api.errors` maps them to status codes."""

from __future__ import annotations

from dataclasses import dataclass


class PromptblameError(Exception):
    """Base of every domain error."""


class StoreUnavailable(PromptblameError):
    """The database cannot be reached or refused a write; the caller may retry."""


class DataDirLocked(PromptblameError):
    """Another process holds the embedded store's data directory."""


class QueueFull(PromptblameError):
    """The writer's queue is full; the request was not accepted and may be retried."""


class WorkerLost(PromptblameError):
    """A worker process died while it held the request; nothing was stored, it may be retried."""


class RateLimited(PromptblameError):
    """The API key made more requests than its rate limit allows; retry after `retry_after` s."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Conflict(PromptblameError):
    """The request contradicts what is stored (e.g. a prompt version with different text)."""


class LabelConflict(Conflict):
    """A label move whose `expected` version is not what the label holds; `current` is."""

    def __init__(self, message: str, *, current: str) -> None:
        super().__init__(message)
        self.current = current


class NotFound(PromptblameError):
    """The named object does not exist in this project."""


class InvalidArgument(PromptblameError):
    """A request argument is unusable; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class MalformedBody(PromptblameError):
    """The request body cannot be parsed (not JSON, broken gzip)."""


class TooLarge(PromptblameError):
    """The request body or its event count is over the limit."""


class UnsupportedMedia(PromptblameError):
    """Content-Type or Content-Encoding that this endpoint does not take."""


class Unauthorized(PromptblameError):
    """No API key, or one that does not exist or was revoked."""


class Forbidden(PromptblameError):
    """The API key lacks the scope this request needs."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file: a dotted field path, why, and the line if known."""

    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.field}: {self.message}"


class ConfigInvalid(PromptblameError):
    """A config (evaluators, alert rules) that cannot be applied; nothing was changed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class UntrustedEvaluator(Conflict):
    """An evaluator version whose agreement with human labels is below the project's trust rule
    was asked to decide a gate."""
