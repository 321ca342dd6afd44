"""robustlab-extras: one third-party plugin of each kind, registered through entry points only."""
