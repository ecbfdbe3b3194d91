"""Chat prompts in the model's own template, rendered the way transformers' apply_chat_template does:
jinja2's immutable sandbox, trim_blocks/lstrip_blocks, loop controls, `raise_exception`, `tojson`,
`strftime_now`, and the special-token strings as variables. The rendered conversation is tokenized as a
whole, so cache reuse (longest common token prefix) never changes the tokens the model sees.
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Sequence

from .errors import ChatTemplateError
from .manifest import ChatSpec

ROLES = ("system", "user", "assistant", "tool")


def _raise(message):
    raise ChatTemplateError(f"the chat template refused the conversation: {message}")


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def compile_template(template: str):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the chat template does not compile: {e}") from e


def check_messages(messages: Sequence[dict]) -> None:
    if not messages:
        raise ChatTemplateError("the conversation has no messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"message {i}: expected {{'role': ..., 'content': str}}")
        if m.get("role") not in ROLES:
            raise ChatTemplateError(f"message {i}: unknown role {m.get('role')!r} (known: {', '.join(ROLES)})")


def render(chat: ChatSpec, messages: Sequence[dict], *, add_generation_prompt: bool = True) -> str:
    import jinja2
    check_messages(messages)
    tpl = compile_template(chat.template)
    try:
        return tpl.render(messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                          bos_token=chat.bos_token, eos_token=chat.eos_token, tools=None, documents=None)
    except ChatTemplateError:
        raise
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the chat template failed to render: {e}") from e
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise ChatTemplateError(f"the chat template failed to render: {type(e).__name__}: {e}") from e


def chat_ids(chat: ChatSpec, tokenizer, messages: Sequence[dict], *, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a conversation, ready for the assistant's reply (add_generation_prompt)."""
    ids = tokenizer.encode_chat(render(chat, messages, add_generation_prompt=add_generation_prompt))
    if chat.add_bos and tokenizer.bos_id is not None:
        ids = [tokenizer.bos_id] + ids
    return ids
