"""Reading a saved plan file (`regctl diff --out plan.json`, `regctl apply plan.json`):
size limit, strict JSON (line and column, duplicate keys), then core.plan's parser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from regctl.core.plan import (
    Plan,
    plan_from_json,
)
from regctl.errors import (
    InputError,
    Location,
    Problem,
)

if TYPE_CHECKING:
    pass


def load_plan_file(path: Path) -> Plan:
    """A saved plan (`diff --out`), or an InputError naming the file and the bad field."""
    from regctl.core.plan import PlanFormatError

    where = Location(str(path))
    try:
        if not path.is_file():
            raise InputError([Problem(where, "", "not a regular file")])
        size = path.stat().st_size
        if size > MAX_PLAN_BYTES:
            raise InputError(
                [Problem(where, "", f"{size} bytes; a plan is at most {MAX_PLAN_BYTES} bytes")]
            )
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
        return plan_from_json(data)
    except PlanFormatError as exc:
        why = exc.reason if exc.field else f"not a regctl plan: {exc.reason}"
        raise InputError([Problem(where, exc.field, why)]) from exc
    except json.JSONDecodeError as exc:
        at = Location(str(path), exc.lineno, exc.colno)
        raise InputError([Problem(at, "", f"not a regctl plan: invalid JSON: {exc.msg}")]) from exc
    except RecursionError as exc:
        raise InputError([Problem(where, "", "not a regctl plan: nested too deeply")]) from exc
    except OSError as exc:
        raise InputError([Problem(where, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except ValueError as exc:  # not UTF-8, not JSON, a duplicate key, a 5,000-digit number
        why = "a number with too many digits" if "digits" in str(exc) else str(exc)
        raise InputError([Problem(where, "", f"not a regctl plan: {why}")]) from exc


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r}")
        out[key] = value
    return out


MAX_PLAN_BYTES = 64 * 1024 * 1024
"""A plan of 10,000 models is a few MB; anything larger is not a plan regctl wrote."""
