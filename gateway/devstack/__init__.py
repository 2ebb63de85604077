"""Real engines for local runs and tests: a tiny model, vLLM and Triton on CPU."""
