"""The invariant audit of any site database: its history loaded once, then every rule checked over it."""

from gate.audit.checks import CHECKS, KINDS, Violation, by_kind, run
from gate.audit.history import History, scope

__all__ = ["CHECKS", "KINDS", "History", "Violation", "by_kind", "run", "scope"]
