"""Command-line layer (click): thin commands over the library API."""
from refactor.cli.app import main

__all__ = ["main"]
