"""The structured-output constraint of an OpenAI request, in one typed form every adapter
renders its own way (TensorRT-LLM's guide tensors, trtllm-serve's `response_format`, the gRPC
`GuidedDecodingParams`). Pure.

A request asks through OpenAI's `response_format` (`json_schema`, `json_object`) or vLLM's
`structured_outputs` (`json`, `regex`, `choice`, `grammar`). A `choice` is matched as a regex
of its options.

Example::

    constraint_of({"structured_outputs": {"choice": ["vui", "buồn"]}})
    # Constraint(kind="regex", text="(vui|buồn)", field="structured_outputs")
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from backends.errors import UnsupportedParameter
from backends.values import value_class

Kind = Literal["json_schema", "json_object", "regex", "grammar"]
_STRUCTURED: dict[str, Kind] = {"json": "json_schema", "regex": "regex", "grammar": "grammar"}


@value_class
class Constraint:
    kind: Kind
    text: str  # the schema as JSON, the regex, or the grammar; "" for json_object
    field: str  # the request field it came from, for error messages


def constraint_field(payload: Mapping[str, Any]) -> str | None:
    """The field through which a request asks for a structured output, or None. Cheap: it
    reads two keys and validates nothing."""
    response_format = payload.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type", "text") != "text":
        return "response_format"
    structured = payload.get("structured_outputs")
    if isinstance(structured, Mapping) and any(v is not None for v in structured.values()):
        return "structured_outputs"
    return None


def constraint_of(payload: Mapping[str, Any]) -> Constraint | None:
    """The request's constraint, or None; `UnsupportedParameter` for one no engine here takes."""
    response_format = payload.get("response_format") or {}
    kind = response_format.get("type", "text") if isinstance(response_format, Mapping) else None
    if kind == "json_schema":
        wrapper = response_format.get("json_schema") or {}
        text = json.dumps(wrapper.get("schema", {}), ensure_ascii=False)
        return Constraint("json_schema", text, "response_format")
    if kind == "json_object":
        return Constraint("json_object", "", "response_format")
    if kind != "text":
        raise UnsupportedParameter(
            f"response_format type '{kind}' is not supported", param="response_format"
        )
    structured = payload.get("structured_outputs") or {}
    chosen = [key for key, value in structured.items() if value is not None]
    if not chosen:
        return None
    if len(chosen) > 1 or chosen[0] not in (*_STRUCTURED, "choice"):
        raise UnsupportedParameter(
            f"structured_outputs '{chosen[0]}' is not supported", param="structured_outputs"
        )
    key, value = chosen[0], structured[chosen[0]]
    if key == "choice":
        regex = "(" + "|".join(re.escape(str(option)) for option in value) + ")"
        return Constraint("regex", regex, "structured_outputs")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return Constraint(_STRUCTURED[key], text, "structured_outputs")
