"""The version of hubckpt (one place; `hubckpt.__version__` and the User-Agent read it)."""

__version__ = "0.1.0"
