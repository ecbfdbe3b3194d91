"""Commands that live in their own modules; cli.py registers them on `main` (no import of cli here)."""
from __future__ import annotations

import click

from .bench.cli import bench
from .eval_cli import eval_cmd
from .serve.cli import serve   # its heavy imports (starlette, uvicorn) happen when it runs


def register(group: click.Group) -> None:
    group.add_command(bench)
    group.add_command(eval_cmd)
    group.add_command(serve)
