"""edge-llm: small language models on ordinary CPUs (Llama, Qwen2/3, SmolLM2, MiniCPM), with onnxruntime
int4 kernels."""
__version__ = "0.2.0"


def load(package_dir=None, **kwargs):
    """Load an exported package: `edge_llm.load("pkg").generate("Hello")`; without a folder, the bundled
    tiny model. See edge_llm.api.Model. The API samples greedily unless given `params`
    (`model.sampling()` gives the checkpoint's generation_config defaults, as the CLI uses)."""
    from .api import Model
    return Model.load(package_dir, **kwargs)
