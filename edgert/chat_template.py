"""Render a model's chat template (Jinja, as shipped in GGUF / tokenizer_config.json).

Templates come from model files, i.e. from outside, so they render in Jinja's immutable
sandbox: a template that reaches for Python internals raises ``TemplateError`` instead
of running.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import EdgertError

Message = Dict[str, str]
Prompt = Union[str, Sequence[Message]]


class TemplateError(EdgertError):
    """A chat template is invalid, unsafe, or raised an error while rendering."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    return _dt.datetime.now().strftime(fmt)


def to_messages(prompt: Prompt, system: Optional[str] = None) -> List[Message]:
    """A plain string becomes one user message; a message list is checked and copied."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = []
        for index, message in enumerate(prompt):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                    or not isinstance(message.get("content"), str):
                raise TemplateError(
                    f"message {index}: expected {{'role': str, 'content': str}}, found {message!r}"
                )
            messages.append({"role": message["role"], "content": message["content"]})
    if system is not None and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


class ChatTemplate:
    """A compiled, sandboxed chat template."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"chat template is not valid Jinja: {exc.message} (line {exc.lineno})") from None

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True, **extra: Any) -> str:
        from jinja2.exceptions import SecurityError, TemplateError as JinjaError

        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except SecurityError as exc:
            raise TemplateError(f"chat template refused: it tried an unsafe operation ({exc})") from None
        except JinjaError as exc:
            raise TemplateError(f"chat template failed to render: {exc}") from None
