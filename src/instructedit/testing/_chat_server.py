"""A local OpenAI-compatible chat-completions server around a transformers causal LM, for tests
of chat-model clients (it serves the tiny language model on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

__all__ = ["ChatServer", "serve_chat_model"]


@dataclass
class ChatServer:
    """A running server: its base URL (up to ``/v1``) and what it has served.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1``.
        requests: the chat-completion requests received (their JSON bodies), rate-limited
            ones included.
        rate_limited: how many requests got HTTP 429.
    """

    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    rate_limited: int = 0


@contextmanager
def serve_chat_model(
    model: Any, tokenizer: Any, *, rate_limit_first: int = 0, seed: int = 0
) -> Iterator[ChatServer]:
    """Serves ``model`` at ``POST /v1/chat/completions`` on a free port of 127.0.0.1 while the
    block runs.

    The model has no chat template: the reply continues the last user message as a completion
    model would (sampling with the request's ``temperature``, ``top_p`` and ``max_tokens``,
    cut at its ``stop`` strings), and the reply's ``finish_reason`` is ``"stop"`` or
    ``"length"``. The first ``rate_limit_first`` requests get HTTP 429 with ``Retry-After: 0``.
    Sampling is seeded from ``seed`` and the request's position, so a run is reproducible.
    """
    lock = threading.Lock()
    state = ChatServer(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                return
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length))
                prompt = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
            except (ValueError, KeyError, IndexError, TypeError) as error:
                self._send(400, {"error": {"message": f"bad request: {error}"}}, {})
                return
            with lock:
                state.requests.append(body)
                number = len(state.requests)
                if state.rate_limited < rate_limit_first:
                    state.rate_limited += 1
                    self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                    return
                text, finish = _complete(model, tokenizer, prompt, body, seed + number)
            reply = {
                "id": f"chatcmpl-{number}",
                "object": "chat.completion",
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
            }
            self._send(200, reply, {})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _complete(
    model: Any, tokenizer: Any, prompt: str, body: dict[str, Any], seed: int
) -> tuple[str, str]:
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    temperature = float(body.get("temperature", 1.0))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=temperature > 0,
                temperature=max(temperature, 1e-5),
                top_p=float(body.get("top_p", 1.0)),
                max_new_tokens=int(body.get("max_tokens", 64)),
                pad_token_id=pad,
            )
    text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    for stop in body.get("stop") or []:
        if stop in text:
            return text.split(stop, 1)[0], "stop"
    return text, "length"
