"""An OpenAI-compatible inference gateway: vLLM today, TensorRT-LLM on Triton tomorrow."""

__version__ = "0.1.0"
