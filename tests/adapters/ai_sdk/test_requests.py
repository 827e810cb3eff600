"""What Turnstile takes from ``DefaultChatTransport``'s POST body (sans-IO)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from turnstile.adapters.ai_sdk.requests import ApprovalResponse, approval_responses, decode_request, prompt_of
from turnstile.adapters.errors import ApiError


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def user(text: str, mid: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"id": mid, "role": "user", "parts": [{"type": "text", "text": text}], **extra}


def test_the_transports_body_gives_the_last_user_messages_text() -> None:
    history = [
        user("first", "u1"),
        {"id": "t1", "role": "assistant", "parts": [{"type": "text", "text": "hi"}]},
    ]
    request = decode_request(
        body(
            id="chat-1",
            messages=[
                *history,
                {
                    "id": "u2",
                    "role": "user",
                    "parts": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
            trigger="submit-message",
            messageId=None,
            model="an app's own field",  # the transport's `body` option: ignored
        )
    )
    assert request.id == "chat-1" and request.trigger == "submit-message"
    assert prompt_of(request) == "a\n\nb"
    assert approval_responses(request) == []


def test_only_the_last_message_may_be_sent() -> None:
    request = decode_request(body(id="c", message=user("just this")))
    assert prompt_of(request) == "just this"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "missing_body"),
        (b"{nope", "invalid_json"),
        (body(messages=[user("x")]), "invalid_body"),  # no id
        (body(id="c", messages=[]), "invalid_body"),
        (body(id="c", messages=[user("x")], trigger="resume-stream"), "invalid_body"),
        (body(id="c", messages=[{"id": "m", "role": "robot", "parts": []}]), "invalid_body"),
    ],
)
def test_bad_bodies_are_400s(raw: bytes, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_request(raw)
    assert (caught.value.status, caught.value.code) == (400, code)


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        (
            [{"id": "a", "role": "assistant", "parts": [{"type": "text", "text": "x"}]}],
            "missing_user_message",
        ),
        ([user("   ")], "empty_prompt"),
        (
            [
                {
                    "id": "u",
                    "role": "user",
                    "parts": [{"type": "file", "mediaType": "image/png", "url": "data:,"}],
                }
            ],
            "unsupported_part",
        ),
    ],
)
def test_prompts_that_cannot_be_sent(messages: list[dict[str, Any]], code: str) -> None:
    with pytest.raises(ApiError) as caught:
        prompt_of(decode_request(body(id="c", messages=messages)))
    assert (caught.value.status, caught.value.code) == (400, code)


def test_a_re_post_with_answered_approvals_is_not_a_prompt() -> None:
    assistant = {
        "id": "t1",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {
                "type": "dynamic-tool",
                "toolName": "Bash",
                "toolCallId": "toolu_1",
                "state": "approval-responded",
                "input": {"command": "rm -rf build"},
                "approval": {"id": "req_1", "approved": False, "reason": "not now"},
            },
            {
                "type": "dynamic-tool",
                "toolName": "Bash",
                "toolCallId": "toolu_2",
                "state": "approval-responded",
                "approval": {"id": "req_2", "approved": True},
            },
            {
                "type": "dynamic-tool",
                "toolName": "Read",
                "toolCallId": "toolu_3",
                "state": "output-available",
            },
        ],
    }
    request = decode_request(body(id="c", messages=[user("clean up"), assistant], trigger="submit-message"))
    assert approval_responses(request) == [
        ApprovalResponse(approval_id="req_1", tool_call_id="toolu_1", approved=False, reason="not now"),
        ApprovalResponse(approval_id="req_2", tool_call_id="toolu_2", approved=True),
    ]
