"""A stand-in for ``trtllm-serve <model> --grpc``: TensorRT-LLM's SMG gRPC server, on CPU.

The real server (``tensorrt_llm/grpc/smg/``) serves ``trtllm.TrtllmService`` from the PyPI
package ``smg-grpc-proto``; this one serves the same service from the same package, pinned at
0.4.28, with the generated stubs (no hand-written wire format), and generates with ``TinyLlm``
on token ids. It follows ``backends/TENSORRT_LLM.md`` §B, read from upstream's
``smg/servicer.py@8fe605ec``, ``smg/request_manager.py@3c68ae6a``, ``smg/server.py@8bd088ee``,
``smg/bindings.py@295125be`` and ``sampling_params.py@000a01de`` (``_setup``, greedy rule).

What a client sees, as upstream's servicer gives it (details in ``trtllm_grpc_servicer``):

- ``Generate`` takes ``tokenized.input_token_ids`` (no ``tokenized``: INVALID_ARGUMENT "Missing
  tokenized input") and never detokenises; every response echoes ``request_id``. Absent
  temperature and top_p are 1.0 and top_k the whole vocabulary, so the default is sampling;
  greedy when temperature 0, top_p 0, top_k 1 or min_p 1. ``stop`` strings are tokenised here
  without special tokens and matched on ids, as are ``stop_token_ids``; both are cut from the
  output unless ``include_stop_token_in_output``, and reported as ``matched_stop_str`` /
  ``matched_token_id``. The end ids are the tokenizer's eos and ``generation_config.json``'s eos
  ids (none with ``ignore_eos``); ending on one is "stop" with no matched stop. A chat turn end
  (``<|end|>``, ``<|im_end|>``) ends the answer only if it is one of them or a requested stop
  token. Streaming sends a ``chunk`` of new ids per step (cumulative ``completion_tokens``),
  then one ``complete`` with every id; non-streaming only the ``complete``.
- Guides apply only with a non-empty ``guide``: REGEX, JSON_SCHEMA and JSON (a flat object)
  through ``TinyLlm.guide``. Started with ``guided_decoding=False``, every guide is silently
  dropped, as on a PyTorch-backend server with no guided decoding backend.
- Errors are gRPC statuses: INVALID_ARGUMENT for bad input (``ValueError``), INTERNAL for engine
  failures (the ``[[fail:N]]`` hook, after N tokens), never an in-band message.
- ``Abort`` answers "Request <id> aborted" / "... not found"; a client that cancels the call
  stops generation. ``HealthCheck`` is "OK"; ``GetModelInfo`` has ``model_id`` (the served name,
  else the model path), ``max_input_len``, ``max_seq_len`` and the base ``vocab_size``;
  ``GetServerInfo`` says backend "tensorrt-llm"; ``Embed``, ``GetTokenizer`` and
  ``SubscribeKvEvents`` are UNIMPLEMENTED.

Inferred or chosen where the facts are silent, each kept small: an aborted stream ends with a
``complete`` whose finish_reason is "cancelled" (the LLM API's reason for a cancelled request,
sent as for any finished one); a stop string's leading tokens may have been streamed before it
matched, and only the ``complete`` has them cut; ``max_tokens`` 0, an empty prompt, an
out-of-vocabulary id or a prompt past ``max_input_len`` (1024 unless ``max_input_len`` says)
/ ``max_seq_len`` 2048 is
INVALID_ARGUMENT; an unseeded request draws a random seed; a stop token that is also an end id
counts as the stop token. What the tiny engine lacks (n > 1, beam search, logprobs, logits,
LoRA, images, embedding bias, EBNF and structural-tag guides; min_p only as the greedy switch)
is UNIMPLEMENTED, never silently ignored. No ``cached_tokens``, no empty first chunk, and
``GetServerInfo.version`` is "0+tiny-llm".

Example::

    with TrtllmGrpcEngine(build_tiny_model(Path("/tmp/tiny-phi3"))) as engine:
        stub = trtllm_service_pb2_grpc.TrtllmServiceStub(grpc.aio.insecure_channel(engine.address))
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.engines.started import Started
from tests.engines.triton_engine import _free_ports

_LOG_TAIL_LINES = 60
_STOP_GRACE_SECONDS = 20.0
_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# Upstream's server options (smg/server.py), so keepalive and size limits behave alike.
_SERVER_OPTIONS = (
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", True),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10000),
)


class TrtllmGrpcEngine(Started):
    """Runs this module's ``main`` in a subprocess on a free port; ``address`` is host:port."""

    def __init__(
        self,
        model_dir: Path,
        *,
        guided_decoding: bool = True,
        served_name: str | None = None,
        max_input_len: int = 1024,
        log_path: Path | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.guided_decoding = guided_decoding
        self.max_input_len = max_input_len
        self.served_name = served_name
        (self.port,) = _free_ports(1)
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path or _temp_log_path()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        return None if self._process is None else self._process.pid

    def command(self) -> list[str]:
        """The exact command line the engine runs."""
        command = [
            sys.executable, "-m", "tests.engines.trtllm_grpc_engine",
            "--model-dir", str(self.model_dir), "--port", str(self.port),
            "--max-input-len", str(self.max_input_len),
        ]  # fmt: skip
        if self.served_name is not None:
            command += ["--served-model-name", self.served_name]
        return command if self.guided_decoding else [*command, "--no-guided-decoding"]

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and block until HealthCheck says "OK"."""
        if self._process is not None:
            raise RuntimeError("TrtllmGrpcEngine already started")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._process.poll() is not None:
                self._fail(f"the gRPC engine exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"the gRPC engine not healthy after {timeout:.0f} s")
            time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM the server, SIGKILL its group after 20 s. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_GRACE_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _healthy(self) -> bool:
        import grpc
        from smg_grpc_proto.generated import (
            trtllm_service_pb2,
            trtllm_service_pb2_grpc,
        )

        with grpc.insecure_channel(self.address) as channel:
            stub = trtllm_service_pb2_grpc.TrtllmServiceStub(channel)
            try:
                reply = stub.HealthCheck(trtllm_service_pb2.HealthCheckRequest(), timeout=2.0)
            except grpc.RpcError:
                return False
        return bool(reply.status == "OK")

    def _fail(self, reason: str) -> None:
        self.stop()
        raise RuntimeError(f"{reason}; log {self.log_path}, last lines:\n{self.log_tail()}")


def _temp_log_path() -> Path:
    handle, path = tempfile.mkstemp(prefix="trtllm-grpc-", suffix=".log")
    os.close(handle)
    return Path(path)


async def _serve(args: argparse.Namespace) -> None:
    # Heavy imports here, so importing this module for TrtllmGrpcEngine stays cheap.
    import grpc
    from smg_grpc_proto.generated import trtllm_service_pb2_grpc

    from tests.engines.tiny_llm import TinyLlm
    from tests.engines.trtllm_grpc_servicer import TrtllmServicer

    # As upstream: the model loads first, so a listening server is a ready one.
    servicer = TrtllmServicer(
        TinyLlm(args.model_dir),
        model_id=args.served_model_name or str(args.model_dir),
        guided_decoding=args.guided_decoding,
        max_input_len=args.max_input_len,
    )
    server = grpc.aio.server(options=_SERVER_OPTIONS)
    trtllm_service_pb2_grpc.add_TrtllmServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"serving trtllm.TrtllmService on 127.0.0.1:{args.port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await server.stop(grace=5.0)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve TrtllmService on 127.0.0.1:PORT until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name")
    parser.add_argument("--no-guided-decoding", dest="guided_decoding", action="store_false")
    # Upstream's `max_input_len` LLM argument: prompts longer are INVALID_ARGUMENT.
    parser.add_argument("--max-input-len", type=int, default=1024)
    args = parser.parse_args(argv)

    import uvloop  # upstream serves on uvloop too

    uvloop.run(_serve(args))


if __name__ == "__main__":
    main()
