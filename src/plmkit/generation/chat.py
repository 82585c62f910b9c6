"""Chat templates: the Jinja template an instruct model was trained with, rendered as `transformers` does.

A template turns a list of messages ({"role": "user", "content": "..."}) into the model's prompt text;
`add_generation_prompt=True` appends the opening of the assistant's turn so generation continues as the assistant.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from plmkit.errors import PlmkitError


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise PlmkitError(f"chat template: {message}")

    # The environment transformers renders chat templates in: sandboxed, trim_blocks + lstrip_blocks, loop controls.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise PlmkitError(f"chat template: invalid Jinja ({e.message}, line {e.lineno})") from None


def render_chat(template: str, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True,
                **variables: Any) -> str:
    """The prompt text for `messages`; `variables` (bos_token, eos_token, ...) are visible to the template."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise PlmkitError(f"message {i}: expected a dict with 'role' and 'content', got {message!r}")
    return _compile(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                     **variables)


def apply_chat_template(tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True,
                        tokenize: bool = False) -> str | list[int]:
    """Render `messages` with the tokenizer's `chat_template` (as Hugging Face's method of that name): the prompt
    text, or its token ids with `tokenize=True`. The special tokens go in as text and tokenize as themselves."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise PlmkitError("this tokenizer has no chat_template (instruct models carry one; base models do not)")
    specials = {role: getattr(tokenizer, role, None) for role in ("bos_token", "eos_token", "unk_token", "pad_token")}
    text = render_chat(template, messages, add_generation_prompt, **specials)
    return tokenizer.encode(text, add_special_tokens=False) if tokenize else text
