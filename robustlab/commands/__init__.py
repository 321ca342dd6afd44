"""CLI commands, one module each, imported lazily by robustlab.cli."""
