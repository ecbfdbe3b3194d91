"""JSON writer shared by the reference scripts: indented objects, lists of scalars on one line."""
from __future__ import annotations

import json
from pathlib import Path

_SCALARS = (int, float, str, bool, type(None))


def dumps(obj, indent: int = 1, _level: int = 0) -> str:
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {dumps(v, indent, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(isinstance(x, _SCALARS) for x in obj):
            return json.dumps(list(obj), ensure_ascii=False)
        return "[\n" + ",\n".join(inner + dumps(x, indent, _level + 1) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def dump(path: Path, obj) -> None:
    text = dumps(obj) + "\n"
    assert json.loads(text) == json.loads(json.dumps(obj, ensure_ascii=False)), "refjson round trip"
    Path(path).write_text(text, encoding="utf-8")
