"""Errors a user can cause.

Every error a user can trigger (a bad path, a wrong shape, an unknown name, a value outside the
declared range) is a :class:`RobustlabError`. The CLI prints its message as one line on stderr and
exits with :attr:`RobustlabError.exit_code` (2). The message always says what to do next.
"""

from __future__ import annotations


class RobustlabError(Exception):
    """Base class of all user-facing errors (exit code 2)."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class UnknownNameError(RobustlabError, KeyError):
    """An unknown registry name or spec prefix."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ModelLoadError(RobustlabError):
    """A model file is missing, corrupt, or cannot be turned into a classifier."""


class TrustError(RobustlabError):
    """A model format that can run code was asked for without the explicit trust flag."""


class DataError(RobustlabError):
    """Data is missing, malformed, out of bounds, or has labels outside the classes."""


class ModelOutputError(RobustlabError):
    """The model's output is not (N, num_classes) logits, or is not finite."""


class SuiteError(RobustlabError):
    """A suite file is invalid: YAML errors, unknown keys or checks, impossible budgets."""


class PolicyError(RobustlabError):
    """A gate policy file is invalid."""


class ResumeError(RobustlabError):
    """A run cannot be resumed because the model, data or suite changed."""
