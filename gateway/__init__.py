"""An OpenAI-compatible inference gateway: vLLM today, TensorRT-LLM tomorrow, without guessing."""

from importlib.metadata import version

__version__ = version("pika-gateway")  # one place: the package's metadata (pyproject.toml)
