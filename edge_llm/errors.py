"""User-facing errors: each one is printed as a single line by the CLI (tracebacks only with --debug)."""


class EdgeLLMError(Exception):
    """Base for errors caused by the user's input or environment, not by a bug."""


class CheckpointError(EdgeLLMError):
    """The checkpoint folder is missing, incomplete, corrupt or unsupported."""


class UnsafePickleError(CheckpointError):
    """A pickle asked for a global outside the weights-file allowlist; nothing was executed."""


class PackageError(EdgeLLMError):
    """A package folder is missing, incomplete, or written by an incompatible exporter."""


class ExportError(EdgeLLMError):
    """The export could not be completed (output not writable, disk full, validation failed)."""


class ContextFullError(EdgeLLMError):
    """The conversation no longer fits the model's context window."""


class OutOfMemoryError(EdgeLLMError):
    """The KV cache a request needs does not fit the memory the machine has available."""


class Terminated(BaseException):
    """SIGTERM arrived where a command cleans up first (export); the CLI exits 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class ChatTemplateError(EdgeLLMError):
    """A conversation the package's chat template cannot render (its own error is quoted)."""
