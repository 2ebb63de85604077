"""Real engines for tests and the local demo, kept out of the production wheel.

A tiny model the tests build, vLLM's CPU build and a real Triton server on it.
"""
