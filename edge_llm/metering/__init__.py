"""What measures, below the generator: energy counters and power models, cost per token, the machine,
memory probes, and the step meter the generator runs every model step through. Nothing here imports
the generator or any command (tests/test_layering.py)."""
