"""Structured output: an answer that does not fit the schema is a failed backend, never a candidate.

``with_structured_output(schema)`` binds the schema as the one tool every backend must call and parses
the chosen answer's first tool call; so that the answer picked always parses, each backend's answer is
checked the same way first (a Pydantic schema validates the arguments; any other schema needs the call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ValidationError
from pydantic.v1 import ValidationError as ValidationErrorV1

#: raises ValueError when a backend's message does not fit
AnswerCheck = Callable[[BaseMessage], None]


class SchemaMismatch(ValueError):
    """A backend's answer does not fit the structured-output schema."""


def structured_output_check(schema: Any) -> AnswerCheck:
    """The check of an answer against ``schema`` as ``with_structured_output`` will parse it."""
    name = convert_to_openai_tool(schema)["function"]["name"]
    pydantic_schema = isinstance(schema, type) and is_basemodel_subclass(schema)

    def check(message: BaseMessage) -> None:
        calls = list(getattr(message, "tool_calls", None) or [])
        if not calls:
            raise SchemaMismatch(f"the answer has no call of the structured-output tool {name!r}")
        first = calls[0]
        if first.get("name") != name:
            raise SchemaMismatch(
                f"the answer's first tool call is {first.get('name')!r}, not the structured-output tool {name!r}"
            )
        if pydantic_schema:
            # pydantic v2 models validate with model_validate, v1 models (pydantic.v1) with parse_obj
            validate = getattr(schema, "model_validate", None) or schema.parse_obj
            try:
                validate(first.get("args") or {})
            except (ValidationError, ValidationErrorV1) as exc:
                errors = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()
                )
                raise SchemaMismatch(f"the answer does not fit {name}: {errors}") from exc

    return check
