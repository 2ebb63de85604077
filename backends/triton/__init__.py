"""TensorRT-LLM on NVIDIA Triton: the adapter, and how OpenAI fields become its tensors and back."""
