"""Caption edits by a chat model behind any OpenAI-compatible chat-completions endpoint (OpenAI,
DeepSeek, vLLM, llama.cpp's server, ...), in the official format."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructedit._checks import check_counts
from instructedit.captions._format import (
    END,
    CaptionEdit,
    Rejection,
    check_captions,
    format_completion,
    format_prompt,
    judge_completion,
)
from instructedit.checkpoints import write_json_atomic

__all__ = ["CHAT_EXAMPLES", "ChatCaptionEditor", "ChatSettings"]

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You write image-editing data. Given an image caption, reply with one edit instruction and "
    "the caption of the edited image, in exactly this format and nothing else:\n"
    "<instruction>\n%%\n<edited caption>\nEND\n"
    "The instruction is a short imperative ('make it snowy', 'have her ride a dragon'); the "
    "edited caption describes the same scene with only that change."
)
"""The system message: the task and the official completion format."""

CHAT_EXAMPLES: tuple[CaptionEdit, ...] = (
    CaptionEdit(
        "a photograph of a girl riding a horse",
        "have her ride a dragon",
        "a photograph of a girl riding a dragon",
    ),
    CaptionEdit(
        "a red car parked on a quiet street", "make it snowy", "a red car parked on a snowy street"
    ),
    CaptionEdit(
        "an oil painting of a lighthouse at dusk",
        "turn it into a watercolor",
        "a watercolor of a lighthouse at dusk",
    ),
)
"""The default few-shot examples, shown as user and assistant turns in the official format."""


@dataclass(frozen=True)
class ChatSettings:
    """Sampling and transport settings of :class:`ChatCaptionEditor` (the official GPT-3
    sampling where one exists: temperature 0.7, top_p 1, frequency penalty 0.1, 256 tokens, stop
    ``"\\nEND"``, 3 tries).

    Attributes:
        temperature: sampling temperature.
        top_p: nucleus sampling.
        frequency_penalty: OpenAI's frequency penalty.
        max_tokens: longest reply.
        retries: requests per caption before a malformed or identical reply becomes a
            :class:`~instructedit.captions.Rejection`.
        max_attempts: tries of one request through rate limits (HTTP 429), server errors (5xx)
            and dropped connections before giving up with an error.
        backoff: seconds before the first retry of a request; doubles every try (a server's
            ``Retry-After`` wins).
        requests_per_minute: the most requests a minute (``None``: no limit).
        timeout: seconds to wait for one reply.
    """

    temperature: float = 0.7
    top_p: float = 1.0
    frequency_penalty: float = 0.1
    max_tokens: int = 256
    retries: int = 3
    max_attempts: int = 5
    backoff: float = 1.0
    requests_per_minute: float | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        check_counts(self, ("max_tokens", "retries", "max_attempts"))
        for name in ("temperature", "backoff", "timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.requests_per_minute is not None and not self.requests_per_minute > 0:
            raise ValueError(
                f"requests_per_minute must be > 0 or None, got {self.requests_per_minute!r}"
            )


class ChatCaptionEditor:
    """Writes caption edits with a chat model behind an OpenAI-compatible endpoint.

    Each caption is sent as the official prompt (``caption + "\\n##\\n"``) after a system message
    and few-shot turns in the official completion format; the reply must parse as
    ``instruction + "\\n%%\\n" + edited caption`` (:func:`~instructedit.captions.parse_completion`).
    A malformed reply, or one whose edited caption equals the input, is asked again up to
    ``settings.retries`` times and then recorded as a :class:`~instructedit.captions.Rejection`
    (``"unparseable"``, ``"identity"``; ``"flagged"`` when the server's content filter stops the
    reply), never written as an edit.

    Every reply is stored in ``cache`` (one JSON file per request and try, written atomically),
    so a rerun, or a resumed ``instructedit generate``, sends no request it already sent. A
    caption asked again by the same editor (a repeated caption) is a new request, as it is
    without the cache: its k-th occurrence has its own cache entries.

    Args:
        model: the model name the endpoint serves (``"gpt-4o-mini"``, ``"deepseek-chat"``).
        base_url: the API's base URL, up to ``/v1`` (default: ``OPENAI_BASE_URL`` or OpenAI's).
        api_key_env: the environment variable holding the key (sent as a bearer token when set).
        cache: the response cache folder (``None``: no cache).
        examples: few-shot examples (default :data:`CHAT_EXAMPLES`).
        settings: sampling, retries, rate limit (:class:`ChatSettings`).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        cache: str | Path | None = None,
        examples: Sequence[CaptionEdit] = CHAT_EXAMPLES,
        settings: ChatSettings | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must name the endpoint's model, got {model!r}")
        url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
        if settings is not None and not isinstance(settings, ChatSettings):
            raise TypeError(f"settings must be a ChatSettings, got {type(settings).__name__}")
        for index, example in enumerate(examples):
            if not isinstance(example, CaptionEdit):
                raise TypeError(
                    f"examples[{index}] must be a CaptionEdit, got {type(example).__name__}"
                )
        self.model = model
        self.url = url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.cache = Path(cache) if cache is not None else None
        self.examples = tuple(examples)
        self.settings = settings or ChatSettings()
        self.requests = 0
        """Requests sent by this editor (cache hits are not requests)."""
        self._last_request = 0.0
        self._asked: dict[str, int] = {}

    def messages(self, caption: str) -> list[dict[str, str]]:
        """The chat messages sent for ``caption``."""
        turns = [{"role": "system", "content": SYSTEM_PROMPT}]
        for example in self.examples:
            turns.append({"role": "user", "content": format_prompt(example.input)})
            turns.append(
                {
                    "role": "assistant",
                    "content": format_completion(example.instruction, example.output),
                }
            )
        turns.append({"role": "user", "content": format_prompt(caption)})
        return turns

    def _body(self, caption: str) -> dict[str, Any]:
        settings = self.settings
        return {
            "model": self.model,
            "messages": self.messages(caption),
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "frequency_penalty": settings.frequency_penalty,
            "max_tokens": settings.max_tokens,
            "stop": [END],
        }

    def edit(self, captions: Sequence[str]) -> list[CaptionEdit | Rejection]:
        """Returns one edit or rejection per caption, in order."""
        results: list[CaptionEdit | Rejection] = []
        for caption in check_captions(captions):
            results.append(self._edit_one(caption))
        return results

    def _edit_one(self, caption: str) -> CaptionEdit | Rejection:
        if not caption.strip():
            return Rejection(caption, "empty")
        body = self._body(caption)
        occurrence = self._asked.get(caption, 0)
        self._asked[caption] = occurrence + 1
        last = Rejection(caption, "unparseable")
        for attempt in range(self.settings.retries):
            reply = self._reply(body, (occurrence, attempt))
            text, finish = _content(reply)
            if finish == "content_filter":
                return Rejection(caption, "flagged", text)
            judged = judge_completion(caption, text)
            if isinstance(judged, CaptionEdit):
                return judged
            last = judged
            logger.info(
                "reply %d for %r rejected (%s): %r", attempt + 1, caption, last.reason, text
            )
        return last

    # ---------------------------------------------------------------------------- transport

    def _reply(self, body: dict[str, Any], attempt: tuple[int, int]) -> dict[str, Any]:
        """The reply to ``body``'s try ``attempt`` (occurrence, try): from the cache, or
        requested and cached."""
        key = hashlib.sha256(
            json.dumps({"url": self.url, "body": body, "attempt": attempt}, sort_keys=True).encode()
        ).hexdigest()
        file = self.cache / f"{key}.json" if self.cache is not None else None
        if file is not None and file.is_file():
            try:
                cached: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
                return cached
            except (json.JSONDecodeError, UnicodeDecodeError):
                logger.warning("ignoring a corrupt cache entry %s", file)
        reply = self._post(body)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(file, reply)
        return reply

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        delay = settings.backoff
        for attempt in range(1, settings.max_attempts + 1):
            self._respect_rate_limit()
            self.requests += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=settings.timeout) as response:
                    text = response.read().decode("utf-8", "replace")
                try:
                    reply: dict[str, Any] = json.loads(text)
                except json.JSONDecodeError as error:
                    raise RuntimeError(
                        f"{self.url} answered with something other than JSON: {text[:200]!r}"
                    ) from error
                return reply
            except urllib.error.HTTPError as error:
                with error:
                    if error.code != 429 and error.code < 500:
                        detail = error.read().decode("utf-8", "replace")[:500]
                        raise RuntimeError(
                            f"{self.url} refused the request: HTTP {error.code} {error.reason}: "
                            f"{detail}"
                        ) from error
                    wait = _retry_after(error.headers.get("Retry-After"), delay)
                problem = f"HTTP {error.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                wait, problem = delay, f"{type(error).__name__}: {error}"
            if attempt == settings.max_attempts:
                raise ConnectionError(
                    f"{self.url}: no reply after {attempt} tries (last: {problem})"
                )
            logger.warning("%s from %s; retrying in %.1f s", problem, self.url, wait)
            time.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")

    def _respect_rate_limit(self) -> None:
        limit = self.settings.requests_per_minute
        if limit is None:
            return
        wait = self._last_request + 60.0 / limit - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()


MAX_RETRY_AFTER = 300.0
"""The longest a server's ``Retry-After`` is waited, in seconds."""


def _retry_after(header: str | None, default: float) -> float:
    if header is None:
        return default
    try:
        return min(max(0.0, float(header)), MAX_RETRY_AFTER)
    except ValueError:
        return default


def _content(reply: dict[str, Any]) -> tuple[str, str | None]:
    """The first choice's text and finish reason; a reply without them reads as empty."""
    try:
        choice = reply["choices"][0]
        content = choice["message"].get("content") or ""
        return str(content), choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        return "", None
