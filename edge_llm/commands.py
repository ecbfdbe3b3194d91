"""Commands that live in their own modules register here, so cli.py stays a table of contents."""
from .bench.cli import bench
from .cli import main  # cli.py imports this module at its end, after `main` exists
from .eval_cli import eval_cmd

main.add_command(bench)
main.add_command(eval_cmd)
