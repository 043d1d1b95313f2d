"""The report of a command whose whole output is one text (resolve, import, schema)."""

from typing import NamedTuple


class Printed(NamedTuple):
    """What to print and the exit code (SPEC section 5)."""

    text: str
    exit_code: int
