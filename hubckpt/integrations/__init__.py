"""Integrations with training frameworks; each module imports its framework (core hubckpt never does)."""
