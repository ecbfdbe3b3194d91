"""`python -m edge_llm …` is `edge-llm …`."""
from edge_llm.cli import main

main(prog_name="edge-llm")
