"""Self-contained HTML reports rendered from a scorecard alone (no torch import)."""

from .render import build_context, render_report, write_report
from .untested import not_tested

__all__ = ["build_context", "not_tested", "render_report", "write_report"]
