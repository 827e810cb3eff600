"""The chunks of the Vercel AI SDK's UI message stream that Turnstile sends, as msgspec types (sans-IO).

One chunk is one SSE event, ``data: <JSON>``; the JSON field names are the SDK's (``toolCallId``,
``inputTextDelta``, ...). Only chunk types that every supported ``ai`` major version (5, 6 and 7) accepts
are sent, except the approval chunks (``tool-approval-request``, ``tool-output-denied``), which exist
from ``ai`` 6 on. Optional fields left at their default are not written (the SDK's schema takes a
missing field, not ``null``).

Turnstile's own data parts (``data-turnstile-*``; see ``docs/ai-sdk.md``):

* ``data-turnstile-api-retry`` (transient: not stored in the message, seen by ``onData``): the CLI is
  retrying a failed model API call.
* ``data-turnstile-timing`` (stored, ``id`` ``timing``): the turn's outcome, timing, tokens and cost.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias

import msgspec

__all__ = [
    "DONE",
    "Abort",
    "ApiRetryData",
    "ApiRetryPart",
    "Chunk",
    "ErrorChunk",
    "Finish",
    "FinishReason",
    "FinishStep",
    "ReasoningDelta",
    "ReasoningEnd",
    "ReasoningStart",
    "Start",
    "StartStep",
    "TextDelta",
    "TextEnd",
    "TextStart",
    "TimingData",
    "TimingPart",
    "ToolApprovalRequest",
    "ToolInputAvailable",
    "ToolInputDelta",
    "ToolInputError",
    "ToolInputStart",
    "ToolOutputAvailable",
    "ToolOutputDenied",
    "ToolOutputError",
    "encode_chunk",
    "sse_events",
]

FinishReason: TypeAlias = Literal["stop", "length", "content-filter", "tool-calls", "error", "other"]
"""The ``finishReason`` values every supported ``ai`` version accepts (v5 also has ``unknown``, v7
``interrupted``; neither is sent)."""


class _Chunk(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel", tag_field="type"):
    pass


class Start(_Chunk, frozen=True, kw_only=True, tag="start"):
    """Opens the assistant message; ``messageId`` is the turn's id (the same on every replay)."""

    message_id: str


class StartStep(_Chunk, frozen=True, kw_only=True, tag="start-step"):
    """One model call begins (the client adds a ``step-start`` part)."""


class FinishStep(_Chunk, frozen=True, kw_only=True, tag="finish-step"):
    """One model call and the tools it called are over."""


class TextStart(_Chunk, frozen=True, kw_only=True, tag="text-start"):
    id: str


class TextDelta(_Chunk, frozen=True, kw_only=True, tag="text-delta"):
    id: str
    delta: str


class TextEnd(_Chunk, frozen=True, kw_only=True, tag="text-end"):
    id: str


class ReasoningStart(_Chunk, frozen=True, kw_only=True, tag="reasoning-start"):
    id: str


class ReasoningDelta(_Chunk, frozen=True, kw_only=True, tag="reasoning-delta"):
    id: str
    delta: str


class ReasoningEnd(_Chunk, frozen=True, kw_only=True, tag="reasoning-end"):
    """Closes a reasoning part; ``providerMetadata.anthropic`` carries the thinking block's signature
    (or, for redacted thinking, its ``redactedData``), as the SDK's Anthropic provider does."""

    id: str
    provider_metadata: dict[str, dict[str, Any]] | None = None


class ToolInputStart(_Chunk, frozen=True, kw_only=True, tag="tool-input-start"):
    """A tool call begins. Claude Code's tools are not declared on the client: always ``dynamic``."""

    tool_call_id: str
    tool_name: str
    dynamic: bool
    provider_executed: bool | None = None


class ToolInputDelta(_Chunk, frozen=True, kw_only=True, tag="tool-input-delta"):
    tool_call_id: str
    input_text_delta: str


class ToolInputAvailable(_Chunk, frozen=True, kw_only=True, tag="tool-input-available"):
    tool_call_id: str
    tool_name: str
    input: Any
    dynamic: bool
    provider_executed: bool | None = None


class ToolInputError(_Chunk, frozen=True, kw_only=True, tag="tool-input-error"):
    """The call's input never completed (the turn ended while the model was writing it)."""

    tool_call_id: str
    tool_name: str
    input: Any
    error_text: str
    dynamic: bool


class ToolOutputAvailable(_Chunk, frozen=True, kw_only=True, tag="tool-output-available"):
    """``dynamic`` again: ``ai`` 5 looks a dynamic tool's part up only when the output says so."""

    tool_call_id: str
    output: Any
    dynamic: bool


class ToolOutputError(_Chunk, frozen=True, kw_only=True, tag="tool-output-error"):
    tool_call_id: str
    error_text: str
    dynamic: bool


class ToolApprovalRequest(_Chunk, frozen=True, kw_only=True, tag="tool-approval-request"):
    """``ai`` 6+: the tool call waits for the user's yes or no (``approvalId``: the CLI's request id)."""

    approval_id: str
    tool_call_id: str


class ToolOutputDenied(_Chunk, frozen=True, kw_only=True, tag="tool-output-denied"):
    """``ai`` 6+: the user said no; the tool did not run."""

    tool_call_id: str


class ApiRetryData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The CLI's ``system/api_retry`` line: which attempt, how long until it, and what failed."""

    attempt: int | None = None
    max_retries: int | None = None
    retry_delay_ms: float | None = None
    error_status: int | None = None
    error: str | None = None


class ApiRetryPart(_Chunk, frozen=True, kw_only=True, tag="data-turnstile-api-retry"):
    """Transient (pass ``transient=True``: a field without a default, so that it is always written)."""

    data: ApiRetryData
    transient: bool


class TimingData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """How the turn ended and where its time went (milliseconds; ``None`` when unknown): the outcome and
    reason, then every field of the engine's :class:`~engine.timing.TurnTiming`, camelCase (msgspec
    renames only a class's own fields, so they are listed here; the mapping passes them all by name, so a
    field added there and not here fails the tests at once)."""

    outcome: str
    reason: str = ""
    total_ms: float | None = None
    ttfe_ms: float | None = None
    thinking_ms: float | None = None
    responding_ms: float | None = None
    tool_ms: float | None = None
    tool_calls: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    ttft_ms: float | None = None
    stalled_ms: float | None = None


class TimingPart(_Chunk, frozen=True, kw_only=True, tag="data-turnstile-timing"):
    """Stored in the message; ``id`` (``timing``) makes a second one replace the first."""

    id: str
    data: TimingData


class Finish(_Chunk, frozen=True, kw_only=True, tag="finish"):
    finish_reason: FinishReason


class Abort(_Chunk, frozen=True, kw_only=True, tag="abort"):
    """The turn was interrupted (``reason`` is read by ``ai`` 6+ and ignored by 5)."""

    reason: str = ""


class ErrorChunk(_Chunk, frozen=True, kw_only=True, tag="error"):
    """The turn failed; ``errorText`` is the real reason (never a masked "An error occurred.")."""

    error_text: str


Chunk: TypeAlias = (
    Start
    | StartStep
    | FinishStep
    | TextStart
    | TextDelta
    | TextEnd
    | ReasoningStart
    | ReasoningDelta
    | ReasoningEnd
    | ToolInputStart
    | ToolInputDelta
    | ToolInputAvailable
    | ToolInputError
    | ToolOutputAvailable
    | ToolOutputError
    | ToolApprovalRequest
    | ToolOutputDenied
    | ApiRetryPart
    | TimingPart
    | Finish
    | Abort
    | ErrorChunk
)
"""Every chunk Turnstile sends."""

_encoder: Final = msgspec.json.Encoder()


DONE: Final = b"data: [DONE]\n\n"
"""The stream's last event, as the SDK's ``JsonToSseTransformStream`` writes it."""


def encode_chunk(chunk: Chunk) -> bytes:
    """The chunk's JSON (one line: msgspec escapes control characters inside strings)."""
    return _encoder.encode(chunk)


def sse_events(chunks: list[Chunk], seq: int | None = None) -> bytes:
    """The chunks as SSE events (``data: <JSON>``). With ``seq``, the last one carries ``id: <seq>``: a
    client that saw it has every chunk of that log entry, so ``Last-Event-ID`` resumes exactly after it."""
    if not chunks:
        return b""
    events = [b"data: %s\n\n" % _encoder.encode(c) for c in chunks]
    if seq is not None:
        events[-1] = b"id: %d\n%s" % (seq, events[-1])
    return b"".join(events)
