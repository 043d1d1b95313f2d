"""The base of every YAML document schema (manifests, policies, waivers).

Unknown keys are errors, nothing is coerced (`"1"` is not a number), and a parsed spec
is frozen. One definition, so a manifest and a policy file are held to the same rules.
"""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A strict, frozen pydantic model: the base of ManifestSpec, PolicySpec, WaiverSpec."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
