"""Imports a config file that does not exist."""

from ..common.no_such_file import model  # noqa: F401
