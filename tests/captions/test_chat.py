"""Caption edits by a chat model, against a real OpenAI-compatible server on 127.0.0.1 serving the
tiny language model: well-formed edits, malformed replies retried then refused, the response
cache, rate limits and backoff."""

import socket

import pytest

from instructedit.captions import (
    CHAT_EXAMPLES,
    CaptionEdit,
    ChatCaptionEditor,
    ChatSettings,
    Rejection,
    finetune_caption_editor,
    is_identity_edit,
)
from instructedit.testing import serve_chat_model, tiny_causal_lm

EDITS = [
    CaptionEdit(
        f"a {c} {s} on a {b} background", f"make the {s} {n}", f"a {n} {s} on a {b} background"
    )
    for c, n in [("red", "blue"), ("green", "yellow"), ("blue", "red")]
    for s in ["circle", "square"]
    for b in ["white", "black"]
]
FAST = ChatSettings(max_tokens=40, backoff=0.0)


@pytest.fixture(scope="module")
def trained():
    """The tiny language model fine-tuned on the official format (it then writes edits)."""
    model, tokenizer = tiny_causal_lm(seed=0)
    finetune_caption_editor(
        model, tokenizer, EDITS, epochs=150, learning_rate=3e-3, batch_size=12, progress=False
    )
    return model.eval(), tokenizer


def test_well_formed_edits_are_written_and_a_rerun_is_served_from_the_cache(trained, tmp_path):
    captions = [edit.input for edit in EDITS[:6]]
    with serve_chat_model(*trained) as server:
        editor = ChatCaptionEditor(
            "tiny", base_url=server.base_url, cache=tmp_path / "cache", settings=FAST
        )
        results = editor.edit(captions)
        sent = len(server.requests)
        again = ChatCaptionEditor(
            "tiny", base_url=server.base_url, cache=tmp_path / "cache", settings=FAST
        ).edit(captions)
        assert len(server.requests) == sent  # the rerun sent nothing
    edits = [result for result in results if isinstance(result, CaptionEdit)]
    assert len(edits) >= 4
    for edit in edits:
        assert edit.instruction.startswith("make the")
        assert not is_identity_edit(edit.input, edit.output)
    assert again == results
    assert editor.requests == sent >= len(captions)
    # What the endpoint received: the official prompt after the system message and few-shot turns.
    body = server.requests[0]
    assert body["model"] == "tiny"
    assert body["stop"] == ["\nEND"]
    roles = [message["role"] for message in body["messages"]]
    assert roles == ["system"] + ["user", "assistant"] * len(CHAT_EXAMPLES) + ["user"]
    assert body["messages"][-1]["content"] == captions[0] + "\n##\n"
    assert (
        body["messages"][2]["content"]
        == "have her ride a dragon\n%%\na photograph of a girl riding a dragon\nEND"
    )


def test_a_repeated_caption_is_asked_again_and_cached_apart(trained, tmp_path):
    caption = EDITS[0].input
    with serve_chat_model(*trained) as server:
        first = ChatCaptionEditor("tiny", base_url=server.base_url, cache=tmp_path, settings=FAST)
        results = first.edit([caption, caption])
        sent = len(server.requests)
        again = ChatCaptionEditor("tiny", base_url=server.base_url, cache=tmp_path, settings=FAST)
        assert again.edit([caption, caption]) == results
        assert len(server.requests) == sent >= 2
    assert len(list(tmp_path.glob("*.json"))) == sent


def test_malformed_replies_are_retried_then_refused(tmp_path):
    untrained = tiny_causal_lm(seed=0)  # random weights: replies without the format
    with serve_chat_model(*untrained) as server:
        editor = ChatCaptionEditor(
            "tiny",
            base_url=server.base_url,
            cache=tmp_path,
            settings=ChatSettings(max_tokens=12, retries=3, backoff=0.0),
        )
        results = editor.edit(["a red circle on a white background", ""])
    refused, empty = results
    assert isinstance(refused, Rejection)
    assert refused.reason == "unparseable"
    assert refused.text  # the last reply, kept for inspection
    assert isinstance(empty, Rejection)
    assert empty.reason == "empty"
    assert len(server.requests) == 3  # one request a try; the empty caption costs none


def test_rate_limits_are_waited_out_with_backoff(trained, tmp_path):
    with serve_chat_model(*trained, rate_limit_first=2) as server:
        editor = ChatCaptionEditor("tiny", base_url=server.base_url, settings=FAST)
        (result,) = editor.edit([EDITS[0].input])
    assert server.rate_limited == 2
    assert editor.requests == len(server.requests) >= 3
    assert isinstance(result, CaptionEdit)  # the trained model's edit came through
    with serve_chat_model(*trained, rate_limit_first=10) as server:
        editor = ChatCaptionEditor(
            "tiny", base_url=server.base_url, settings=ChatSettings(max_attempts=2, backoff=0.0)
        )
        with pytest.raises(ConnectionError, match=r"no reply after 2 tries \(last: HTTP 429\)"):
            editor.edit([EDITS[0].input])


def test_an_unreachable_endpoint_is_an_error_naming_it():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    editor = ChatCaptionEditor(
        "tiny",
        base_url=f"http://127.0.0.1:{port}/v1",
        settings=ChatSettings(max_attempts=2, backoff=0.0, timeout=5),
    )
    with pytest.raises(ConnectionError, match=rf"127.0.0.1:{port}/v1/chat/completions: no reply"):
        editor.edit(["a cat"])


def test_the_request_rate_is_held(trained, monkeypatch):
    import instructedit.captions._chat as chat

    waits: list[float] = []
    real_sleep = chat.time.sleep
    monkeypatch.setattr(chat.time, "sleep", lambda seconds: waits.append(seconds) or real_sleep(0))
    with serve_chat_model(*trained) as server:
        editor = ChatCaptionEditor(
            "tiny",
            base_url=server.base_url,
            settings=ChatSettings(max_tokens=40, requests_per_minute=600),
        )
        editor.edit([EDITS[0].input, EDITS[1].input])
    # 600 a minute: each request after the first waits for most of 0.1 s.
    assert len(waits) == editor.requests - 1
    assert all(0.0 < wait <= 0.1 for wait in waits)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"model": ""}, ValueError, "model must name the endpoint's model"),
        ({"base_url": "ftp://x"}, ValueError, "base_url must be an http"),
        ({"examples": ["a cat"]}, TypeError, r"examples\[0\] must be a CaptionEdit"),
        ({"settings": {"retries": 2}}, TypeError, "settings must be a ChatSettings"),
    ],
)
def test_bad_chat_editor_arguments_are_refused(kwargs, error, message):
    arguments = {"model": "tiny", "base_url": "http://127.0.0.1:1/v1", **kwargs}
    with pytest.raises(error, match=message):
        ChatCaptionEditor(**arguments)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"retries": 0}, "retries must be an int >= 1"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"requests_per_minute": 0}, "requests_per_minute must be > 0 or None"),
        ({"temperature": -1.0}, "temperature must be a number >= 0"),
    ],
)
def test_bad_chat_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        ChatSettings(**settings)
