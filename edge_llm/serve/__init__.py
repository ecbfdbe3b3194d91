"""`edge-llm serve`: an OpenAI-compatible HTTP server and chat page on one loaded model."""
