"""Commands that live in their own modules register here, so cli.py stays a table of contents."""
