"""The package manifest: the only contract between the exporter and the runtime.

The runtime reads these fields and nothing else about the model; it never branches on architecture.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import PackageError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    path: Path
    data: dict

    def __getitem__(self, key):
        return self.data[key]

    @property
    def model(self) -> dict:
        return self.data["model"]

    @property
    def io(self) -> dict:
        return self.data["io"]

    @property
    def kv(self) -> dict:
        return self.data["kv_cache"]

    @property
    def tokenizer(self) -> dict:
        return self.data["tokenizer"]

    @property
    def chat(self) -> dict | None:
        return self.data.get("chat")

    @property
    def generation(self) -> dict:
        return self.data.get("generation") or {}

    def file(self, key: str) -> Path:
        return self.path / self.data["files"][key]


REQUIRED = ("model", "files", "io", "kv_cache", "tokenizer")


def load_manifest(package_dir) -> Manifest:
    folder = Path(package_dir)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise PackageError(f"{folder}: package folder not found")
    if not path.is_file():
        raise PackageError(f"{path}: missing; is {folder} a package written by `edge-llm export`?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PackageError(f"{path}: not valid JSON ({e})") from e
    if data.get("format") != "edge-llm-package":
        raise PackageError(f"{path}: not an edge-llm package manifest")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(f"{path}: format_version {version} is not supported by this runtime "
                           f"(expects {FORMAT_VERSION}); re-export the checkpoint")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise PackageError(f"{path}: missing section(s) {', '.join(missing)}")
    m = Manifest(folder, data)
    for key in ("model", "weights", "tokenizer"):
        if key in data["files"] and not m.file(key).is_file():
            raise PackageError(f"{m.file(key)}: missing from the package")
    return m
