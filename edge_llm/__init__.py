"""edge-llm: 2B-class language models on ordinary CPUs (MiniCPM first), with onnxruntime int4 kernels."""
__version__ = "0.1.0"


def load(package_dir, **kwargs):
    """Load an exported package: `edge_llm.load("pkg").generate("Hello")`. See edge_llm.api.Model."""
    from .api import Model
    return Model.load(package_dir, **kwargs)
