"""The error every data set reader raises: its own module so that the readers and the splits import it, not each other."""

from __future__ import annotations


class DatasetError(ValueError):
    """A data set missing from ``--data-root`` (or from its package), or files there that are not the data set's; the message says which and how to get it."""
