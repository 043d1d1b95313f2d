"""The YAML schemas of `kind: Policy` and `kind: Waiver` documents (pydantic models).

`regctl.policy.loading` validates each document against `PolicySpec` or `WaiverSpec` and
turns the valid ones into `regctl.policy.values`; `regctl schema` publishes their JSON
schemas. The validators here say what YAML made of a value (`'0.06'` is a string, `1` is
not a param value) rather than pydantic's generic messages.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)

from regctl.core.spec import Strict
from regctl.errors import type_name
from regctl.policy.values import Relative

__all__ = ["MatchSpec", "MetricBoundSpec", "PolicySpec", "RuleSpec", "WaiverSpec"]

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PERCENT_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*%\s*$")


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{value!r}: use letters, digits, '_', '-' and '.', starting with a letter or digit"
        )
    return value


def _number(value: Any) -> Any:
    # Strict floats would say "Input should be a valid number" for a quoted "0.06";
    # say what YAML made of it instead.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_type_name(value)}")
    return value


def _relative(value: Any) -> Relative:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a finite number >= 0, got {value!r}")
        return Relative(float(value), percent=False)
    if isinstance(value, str):
        m = _PERCENT_RE.match(value)
        if m is not None:
            return Relative(float(m.group(1)), percent=True)
    raise ValueError(
        f"expected a percentage like '5%' or an absolute number like 0.01, got {value!r}"
    )


def _date(value: Any) -> Any:
    # yamlfile reads an unquoted 2026-12-31 as a date; a quoted ISO date is just as clear.
    if isinstance(value, dt.datetime):
        raise ValueError(
            f"expected a date like 2026-12-31, got a date and time {value.isoformat()}"
        )
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected a date like 2026-12-31, got {value!r}")


def _type_name(value: Any) -> str:
    if isinstance(value, str) and _looks_numeric(value):
        return f"a string ({value!r}): unquote it"
    return type_name(value)


def _param_values(value: Any) -> tuple[str, ...]:
    # Param values are strings in MLflow: `1` must be written '1', or it would never
    # match. One validator instead of `str | list[str]` keeps the message about YAML.
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("give at least one value")
    for item in items:
        if not isinstance(item, str):
            what = _type_name(item)
            hint = ": quote it" if isinstance(item, int | float | bool) else ""
            raise ValueError(f"expected a string or a list of strings, got {what} {item!r}{hint}")
        if not item:
            raise ValueError("values must not be empty")
    return tuple(items)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


Name = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_name)]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Number = Annotated[
    float,
    BeforeValidator(_number),
    Field(allow_inf_nan=False),
]
RelativeValue = Annotated[
    Relative,
    PlainValidator(_relative),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|\.\d+)\s*%\s*$"},
            ]
        }
    ),
]
Expiry = Annotated[
    dt.date,
    BeforeValidator(_date),
    WithJsonSchema({"type": "string", "format": "date"}),
]
ParamValues = Annotated[
    tuple[str, ...],
    PlainValidator(_param_values),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        }
    ),
]


class MetricBoundSpec(Strict):
    """Bounds of one metric: absolute (`min`, `max`) or, with `compare_to`, relative."""

    min: Number | None = Field(None, description="Lowest value allowed (inclusive).")
    max: Number | None = Field(None, description="Highest value allowed (inclusive).")
    max_increase: RelativeValue | None = Field(
        None, description="Largest rise over the incumbent: '5%' of it, or an absolute step."
    )
    max_decrease: RelativeValue | None = Field(
        None, description="Largest fall below the incumbent: '2%' of it, or an absolute step."
    )


class RuleSpec(Strict):
    """One rule: a name, a severity, an optional alias scope and exactly one check."""

    name: Name
    severity: Literal["deny", "warn"] = Field("deny", description="Outcome when it fails.")
    aliases: list[NonEmpty] | None = Field(
        None, description="Judge only versions that will hold any of these aliases."
    )
    require_params: list[NonEmpty] | None = Field(None, description="Params that must exist.")
    require_metrics: list[NonEmpty] | None = Field(None, description="Metrics that must exist.")
    run_name: NonEmpty | None = Field(
        None, description="Regex the run name must match; {param} is the param's escaped value."
    )
    metrics: dict[NonEmpty, MetricBoundSpec] | None = Field(
        None, description="Bounds per metric: min/max, or max_increase/max_decrease."
    )
    compare_to: NonEmpty | None = Field(
        None, description="Alias whose current holder the relative metric bounds refer to."
    )
    require_description: bool | None = Field(None, description="The version needs a description.")
    allowed_aliases: list[NonEmpty] | None = Field(
        None, description="The only aliases a version may hold."
    )
    allowed_params: dict[NonEmpty, ParamValues] | None = Field(
        None, description="Allowed values per param (the param must exist)."
    )


class MatchSpec(Strict):
    """Which versions a policy judges: each param equal to the value or one of the list."""

    params: dict[NonEmpty, ParamValues] = Field(default_factory=dict)


class PolicySpec(Strict):
    """`kind: Policy`: named rules for the versions whose run params match."""

    apiVersion: Literal["regctl/v1"]
    kind: Literal["Policy"]
    name: Name
    match: MatchSpec = Field(description="`{}` judges every version.")
    rules: list[RuleSpec]


class WaiverSpec(Strict):
    """`kind: Waiver`: one rule of one policy does not deny one run of one model until expiry."""

    apiVersion: Literal["regctl/v1"]
    kind: Literal["Waiver"]
    policy: Name
    rule: Name
    model: NonEmpty
    run: NonEmpty | None = Field(
        None, description="Run name inside the model's experiment; needs `digest`."
    )
    run_id: NonEmpty | None = Field(None, description="Run id (instead of `run` + `digest`).")
    digest: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")] | None = Field(
        None, description="The run's content digest, as `regctl check` prints it."
    )
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    expires: Expiry = Field(description="Last day the waiver holds (YYYY-MM-DD).")
