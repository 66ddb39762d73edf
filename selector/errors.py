"""Exceptions raised by :mod:`selector`.

The tree::

    SelectorError (ValueError)
    ├── InvalidScoresError   wrong shape, non-finite, rows not summing to 1
    ├── InvalidConfigError   unknown rule or method name, weight or budget out of range
    └── StateError           saved state that cannot be restored (wrong version, corrupt)

Every message names the argument at fault and, where there is a fixed set of valid values,
lists them.
"""

from __future__ import annotations


class SelectorError(ValueError):
    """Base class of every error raised by the selector library."""


class InvalidScoresError(SelectorError):
    """Model outputs that cannot be scored (shape, NaN/inf, not a probability distribution)."""


class InvalidConfigError(SelectorError):
    """A strategy, rule or budget parameter that is not valid."""


class StateError(SelectorError):
    """Saved selector state that cannot be restored."""
