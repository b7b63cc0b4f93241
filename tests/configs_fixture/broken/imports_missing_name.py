"""Imports a name that the config file does not define."""

from ..common.train import no_such_name  # noqa: F401
