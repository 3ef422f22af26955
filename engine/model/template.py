"""The model's own chat template (Jinja, as Hugging Face tokenizers ship it), rendered in a sandbox."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NoReturn

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import ModelError


def _raise(message: str) -> NoReturn:
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ModelError(f"the model's chat template does not parse: {exc}") from None
        self._special = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
        return self._template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **self._special
        )
