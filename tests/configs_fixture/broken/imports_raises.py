"""Imports a config file that fails while executing."""

from .raises import model  # noqa: F401
