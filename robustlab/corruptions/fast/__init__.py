"""Fast corruptions, one module each; each registers itself in ``FAST_CORRUPTIONS`` (discovered by the registry)."""
