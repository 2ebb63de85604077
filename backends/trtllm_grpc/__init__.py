"""TensorRT-LLM's gRPC server (`trtllm-serve --grpc`): token ids in, token ids out."""
