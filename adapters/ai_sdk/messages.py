"""``UIMessage`` values built from the log, as the AI SDK's client builds them from the stream (sans-IO).

:class:`MessageBuilder` folds chunks into one assistant ``UIMessage`` the way the SDK's
``processUIMessageStream`` does (``readUIMessageStream``, ``useChat``), for the chunks Turnstile sends:
a page that loads :func:`chat_history` sees what a client that read the stream saw. The tests check
the two against each other with the SDK itself.

One difference is on purpose: while a tool call's input is still streaming, the SDK shows it parsed
by its partial-JSON repair; here it is the input so far only once it parses as JSON (else absent).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from turnstile.adapters.ai_sdk.chunks import (
    Abort,
    ApiRetryPart,
    Chunk,
    ErrorChunk,
    Finish,
    FinishStep,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    Start,
    StartStep,
    TextDelta,
    TextEnd,
    TextStart,
    TimingPart,
    ToolApprovalRequest,
    ToolInputAvailable,
    ToolInputDelta,
    ToolInputError,
    ToolInputStart,
    ToolOutputAvailable,
    ToolOutputDenied,
    ToolOutputError,
)
from turnstile.adapters.ai_sdk.mapping import TurnMapper
from turnstile.engine.log import AnyEntry, TurnRequested

__all__ = ["ChatHistory", "MessageBuilder", "chat_history", "user_message", "user_message_id"]

UIMessage = dict[str, Any]

_TextChunk = TextStart | TextDelta | TextEnd | ReasoningStart | ReasoningDelta | ReasoningEnd
_ToolChunk = (
    ToolInputStart
    | ToolInputDelta
    | ToolInputAvailable
    | ToolInputError
    | ToolOutputAvailable
    | ToolOutputError
    | ToolApprovalRequest
    | ToolOutputDenied
)


class MessageBuilder:
    """One assistant ``UIMessage`` (plain JSON data), built chunk by chunk.

    Raises :class:`ValueError` for a chunk the SDK would reject in this position (a delta with no open
    part, an output for an unknown tool call): Turnstile never sends one, so that is a bug to surface.
    """

    def __init__(self, message_id: str = "") -> None:
        self.message: UIMessage = {"id": message_id, "role": "assistant", "parts": []}
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.aborted = False
        self._text: dict[str, dict[str, Any]] = {}
        self._reasoning: dict[str, dict[str, Any]] = {}
        self._inputs: dict[str, str] = {}  # streaming tool inputs so far, by tool call id

    @property
    def parts(self) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = self.message["parts"]
        return parts

    def apply(self, chunk: Chunk) -> None:
        """Fold one chunk into the message."""
        if isinstance(chunk, _TextChunk):
            self._text_like(chunk)
        elif isinstance(chunk, _ToolChunk):
            self._tool(chunk)
        elif isinstance(chunk, Start):
            self.message["id"] = chunk.message_id
        elif isinstance(chunk, StartStep):
            self.parts.append({"type": "step-start"})
        elif isinstance(chunk, FinishStep):
            self._text.clear()
            self._reasoning.clear()
        elif isinstance(chunk, TimingPart):
            data = msgspec.to_builtins(chunk.data)
            for part in self.parts:
                if part.get("type") == "data-turnstile-timing" and part.get("id") == chunk.id:
                    part["data"] = data
                    break
            else:
                self.parts.append({"type": "data-turnstile-timing", "id": chunk.id, "data": data})
        elif isinstance(chunk, Finish):
            self.finish_reason = chunk.finish_reason
        elif isinstance(chunk, ErrorChunk):
            self.error = chunk.error_text
        elif isinstance(chunk, Abort):
            self.aborted = True
        elif isinstance(chunk, ApiRetryPart):
            pass  # transient: the SDK hands it to onData and does not store it

    def _text_like(self, chunk: _TextChunk) -> None:
        part: dict[str, Any]
        if isinstance(chunk, TextStart):
            part = {"type": "text", "text": "", "state": "streaming"}
            self._text[chunk.id] = part
            self.parts.append(part)
        elif isinstance(chunk, ReasoningStart):
            part = {"type": "reasoning", "id": chunk.id, "text": "", "state": "streaming"}
            self._reasoning[chunk.id] = part
            self.parts.append(part)
        elif isinstance(chunk, TextDelta | TextEnd):
            part = self._open(self._text, chunk.id, chunk)
            if isinstance(chunk, TextDelta):
                part["text"] += chunk.delta
            else:
                part["state"] = "done"
                del self._text[chunk.id]
        elif isinstance(chunk, ReasoningDelta | ReasoningEnd):
            part = self._open(self._reasoning, chunk.id, chunk)
            if isinstance(chunk, ReasoningDelta):
                part["text"] += chunk.delta
            else:
                if chunk.provider_metadata is not None:
                    part["providerMetadata"] = chunk.provider_metadata
                part["state"] = "done"
                del self._reasoning[chunk.id]

    @staticmethod
    def _open(parts: dict[str, dict[str, Any]], part_id: str, chunk: Chunk) -> dict[str, Any]:
        part = parts.get(part_id)
        if part is None:
            tag = chunk.__struct_config__.tag
            raise ValueError(f"{tag} for part {part_id!r}, which is not open")
        return part

    def _tool(self, chunk: _ToolChunk) -> None:
        call_id = chunk.tool_call_id
        if isinstance(chunk, ToolInputStart):
            self._inputs[call_id] = ""
            self._tool_part(call_id, chunk.tool_name, create=True)["state"] = "input-streaming"
            return
        if isinstance(chunk, ToolInputAvailable | ToolInputError):
            part = self._tool_part(call_id, chunk.tool_name, create=True)
        else:
            part = self._tool_part(call_id, None, create=False)
        if isinstance(chunk, ToolInputDelta):
            raw = self._inputs.get(call_id)
            if raw is None:
                raise ValueError(f"tool-input-delta for tool call {call_id!r}, which has no tool-input-start")
            raw += chunk.input_text_delta
            self._inputs[call_id] = raw
            try:
                part["input"] = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                part.pop("input", None)
        elif isinstance(chunk, ToolInputAvailable):
            self._inputs.pop(call_id, None)
            part.update(state="input-available", input=chunk.input)
        elif isinstance(chunk, ToolInputError):
            self._inputs.pop(call_id, None)
            part.update(state="output-error", input=chunk.input, errorText=chunk.error_text)
        elif isinstance(chunk, ToolOutputAvailable):
            part.update(state="output-available", output=chunk.output)
        elif isinstance(chunk, ToolOutputError):
            part.update(state="output-error", errorText=chunk.error_text)
        elif isinstance(chunk, ToolApprovalRequest):
            part.update(state="approval-requested", approval={"id": chunk.approval_id})
        elif isinstance(chunk, ToolOutputDenied):
            part["state"] = "output-denied"

    def _tool_part(self, call_id: str, name: str | None, *, create: bool) -> dict[str, Any]:
        part: dict[str, Any]
        for part in reversed(self.parts):
            if part.get("type") == "dynamic-tool" and part.get("toolCallId") == call_id:
                if name is not None:
                    part["toolName"] = name
                return part
        if not create or name is None:
            raise ValueError(f"no tool part for tool call {call_id!r}")
        part = {"type": "dynamic-tool", "toolName": name, "toolCallId": call_id}
        self.parts.append(part)
        return part


def user_message_id(turn_id: str) -> str:
    """The id of the user message that asked for turn ``turn_id`` (the assistant's is the turn id)."""
    return f"{turn_id}-user"


def user_message(turn_id: str, prompt: str | list[dict[str, Any]]) -> UIMessage:
    """The prompt of a turn as a user ``UIMessage`` (text blocks of a content-block prompt as text parts)."""
    if isinstance(prompt, str):
        parts = [{"type": "text", "text": prompt}]
    else:
        parts = [
            {"type": "text", "text": block["text"]}
            for block in prompt
            if block.get("type") == "text" and isinstance(block.get("text"), str)
        ]
    return {"id": user_message_id(turn_id), "role": "user", "parts": parts}


class _Turn:
    __slots__ = ("builder", "mapper", "prompt")

    def __init__(self, turn_id: str) -> None:
        self.mapper = TurnMapper(turn_id)
        self.builder = MessageBuilder(turn_id)
        self.prompt: str | list[dict[str, Any]] | None = None


class ChatHistory:
    """A session's log, entry by entry, as the chat's ``UIMessage[]`` (:meth:`messages`): for each turn,
    in order, its prompt as a user message and, once the turn has made any part, its assistant message
    (id = the turn id) as far as it got."""

    def __init__(self) -> None:
        self._turns: dict[str, _Turn] = {}

    def add(self, entry: AnyEntry) -> None:
        """Fold the session's next log entry in."""
        turn_id = entry.stream
        if turn_id is None:
            return
        turn = self._turns.get(turn_id)
        if turn is None:
            turn = self._turns[turn_id] = _Turn(turn_id)
        if type(entry) is TurnRequested:
            turn.prompt = entry.prompt
        for chunk in turn.mapper.feed(entry):
            turn.builder.apply(chunk)

    def messages(self) -> list[UIMessage]:
        """The chat so far."""
        history: list[UIMessage] = []
        for turn_id, turn in self._turns.items():
            if turn.prompt is not None:
                history.append(user_message(turn_id, turn.prompt))
            if turn.builder.parts:
                history.append(turn.builder.message)
        return history


def chat_history(entries: Iterable[AnyEntry]) -> list[UIMessage]:
    """A whole session log as the chat's ``UIMessage[]`` (see :class:`ChatHistory`)."""
    history = ChatHistory()
    for entry in entries:
        history.add(entry)
    return history.messages()
