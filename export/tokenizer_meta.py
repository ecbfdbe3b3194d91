"""What the runtime needs to know about tokenization and the chat template, decided at export time.

The runtime does not depend on jinja2, so the template is turned into per-role prefix/suffix pairs
here (by rendering it with sentinel messages when jinja2 is installed, or by recognising MiniCPM's
published templates otherwise). The original jinja text is kept in the manifest as well.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

SENTINEL = "\x00CONTENT\x00"

_MINICPM = re.compile(r"'<用户>'\s*\+\s*message\['content'\](\.strip\(\))?\s*\+\s*'<AI>'")


def _render_roles(template: str) -> dict | None:
    try:
        import jinja2
    except ImportError:
        return None
    try:
        env = jinja2.Environment()
        tpl = env.from_string(template)
        roles = {}
        for role in ("system", "user", "assistant"):
            out = tpl.render(messages=[{"role": role, "content": SENTINEL}], add_generation_prompt=False,
                             bos_token="", eos_token="")
            if out.count(SENTINEL) != 1:
                return None
            pre, post = out.split(SENTINEL)
            roles[role] = {"prefix": pre, "suffix": post}
        strip = tpl.render(messages=[{"role": "user", "content": " x "}]).count(" x ") == 0
    except jinja2.TemplateError:
        return None
    return {"roles": roles, "strip": strip}


def chat_format(template: str | None) -> dict | None:
    """{"roles": {role: {"prefix", "suffix"}}, "strip": bool, "stop_strings": [...]} or None."""
    if not template:
        return None
    fmt = _render_roles(template)
    if fmt is None:
        m = _MINICPM.search(template)
        if not m:
            return None
        fmt = {"roles": {"system": {"prefix": "", "suffix": ""}, "user": {"prefix": "<用户>", "suffix": "<AI>"},
                         "assistant": {"prefix": "", "suffix": ""}}, "strip": bool(m.group(1))}
    markers = {fmt["roles"]["user"]["prefix"], fmt["roles"]["user"]["suffix"]} - {""}
    fmt["stop_strings"] = sorted(markers)
    fmt["jinja"] = template
    return fmt


def tokenizer_meta(src: Path) -> dict:
    """Tokenizer facts for the manifest: special ids, BOS handling, whether a leading '▁' is prepended."""
    cfg = {}
    if (src / "tokenizer_config.json").exists():
        cfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    prepend = False
    # A Hugging Face fast tokenizer.json whose normalizer prepends '▁' means the model was trained on
    # ids with that prefix; plain sentencepiece (add_dummy_prefix=false) does not add it.
    tj = src / "tokenizer.json"
    if tj.exists():
        text = tj.read_text(encoding="utf-8")
        prepend = '"Prepend"' in text and ('"prepend": "\\u2581"' in text or '"prepend": "▁"' in text)
    return {
        "type": "sentencepiece",
        "file": "tokenizer.model",
        "add_bos": bool(cfg.get("add_bos_token", True)),
        "add_eos": bool(cfg.get("add_eos_token", False)),
        "prepend_space": prepend,
        "chat_template": cfg.get("chat_template"),
    }
