"""Shared bits of the console's manage.py commands."""

from __future__ import annotations

import argparse

from django.core.management.base import DjangoHelpFormatter


class ExamplesHelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's help layout, keeping the line breaks of the examples in the epilog."""


def with_examples(kwargs: dict, examples: str) -> dict:
    """``create_parser`` keyword arguments that print ``examples`` at the end of ``--help``."""
    return {"formatter_class": ExamplesHelpFormatter, "epilog": "examples:\n" + examples, **kwargs}
