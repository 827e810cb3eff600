"""What ``DefaultChatTransport`` POSTs, and what Turnstile takes from it (sans-IO).

The body is ``{id, messages, trigger, messageId}`` plus whatever the app adds with the transport's
``body`` option (ignored here). ``id`` is the chat, which is a Turnstile session. ``messages`` is the
whole history the page holds; only its last user message is new to the agent, since the agent keeps its
own conversation (the session's CLI process, or its ``--resume`` after a restart). An app that sends
only ``{id, message}`` (the SDK docs' ``prepareSendMessagesRequest`` advice for long chats) is served
the same way.

The approval seam: a re-POST whose last message is the assistant's, with tool parts in state
``approval-responded``, is not a new prompt but the user's answer to pending permission requests of the
running turn (:func:`approval_responses`).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from turnstile.adapters.errors import ApiError

__all__ = [
    "ApprovalResponse",
    "ChatRequest",
    "UiMessage",
    "approval_responses",
    "decode_request",
    "prompt_of",
]


class UiMessage(msgspec.Struct, kw_only=True):
    """A ``UIMessage`` as the client sends it; parts are kept as plain JSON."""

    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = []
    metadata: Any = None


class ChatRequest(msgspec.Struct, kw_only=True, rename={"message_id": "messageId"}):
    """``POST /v1/chat``: the transport's body. Unknown fields (the app's own) are ignored."""

    id: str
    messages: list[UiMessage] = []
    message: UiMessage | None = None
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: str | None = None

    @property
    def last(self) -> UiMessage | None:
        """The newest message: ``message`` if sent alone, else the last of ``messages``."""
        if self.message is not None:
            return self.message
        return self.messages[-1] if self.messages else None


class ApprovalResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The user's answer to one permission request: ``approval_id`` is the CLI's request id."""

    approval_id: str
    tool_call_id: str
    approved: bool
    reason: str | None = None


def decode_request(body: bytes) -> ChatRequest:
    """The request body, or :class:`ApiError` 400 with what is wrong."""
    if not body.strip():
        raise ApiError(400, "missing_body", "a JSON body is required: {id, messages, trigger}")
    try:
        request = msgspec.json.decode(body, type=ChatRequest)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_body", f"invalid chat request: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if request.last is None:
        raise ApiError(
            400, "invalid_body", "the request has no messages: send the user's message in 'messages'"
        )
    return request


def prompt_of(request: ChatRequest) -> str:
    """The prompt: the text parts of the last user message, joined by blank lines.

    Raises :class:`ApiError` 400 when there is no user message, it has file parts (not supported yet) or
    no text.
    """
    user = request.message if request.message is not None and request.message.role == "user" else None
    if user is None:
        user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    if user is None:
        raise ApiError(400, "missing_user_message", "the request has no user message to send to the agent")
    if any(part.get("type") == "file" for part in user.parts):
        raise ApiError(
            400, "unsupported_part", "file parts are not supported yet; send the message's content as text"
        )
    texts = [p["text"] for p in user.parts if p.get("type") == "text" and isinstance(p.get("text"), str)]
    prompt = "\n\n".join(t for t in texts if t)
    if not prompt.strip():
        raise ApiError(400, "empty_prompt", "the last user message has no text")
    return prompt


def approval_responses(request: ChatRequest) -> list[ApprovalResponse]:
    """The answers a re-POST carries: tool parts in state ``approval-responded`` of its last message, when
    that message is the assistant's (``addToolApprovalResponse`` then ``sendMessage()``, or
    ``sendAutomaticallyWhen``). Empty for a new prompt."""
    last = request.last
    if last is None or last.role != "assistant":
        return []
    answers: list[ApprovalResponse] = []
    for part in last.parts:
        approval = part.get("approval")
        if part.get("state") != "approval-responded" or not isinstance(approval, dict):
            continue
        approval_id, tool_call_id = approval.get("id"), part.get("toolCallId")
        if isinstance(approval_id, str) and isinstance(tool_call_id, str):
            reason = approval.get("reason")
            answers.append(
                ApprovalResponse(
                    approval_id=approval_id,
                    tool_call_id=tool_call_id,
                    approved=approval.get("approved") is True,
                    reason=reason if isinstance(reason, str) else None,
                )
            )
    return answers
