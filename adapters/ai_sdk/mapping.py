"""One turn's log entries → the AI SDK's UI message stream chunks (sans-IO: no trio, no sockets).

Feed a :class:`TurnMapper` the entries of one turn (one stream), in log order; each call returns the
chunks that entry makes (often none). The result is a pure function of the log, so a replay from the
turn's first entry gives the very same chunks — which is what makes resume exact.

What maps to what (the CLI's stream-json, with or without ``--include-partial-messages``):

=========================================================  ================================================
log entry                                                  chunks
=========================================================  ================================================
the turn's first entry (``turn.requested``)                ``start`` (``messageId`` = the turn's id)
``stream_event`` ``message_start`` (a model call)          ``finish-step`` of the previous call,
                                                           ``start-step``
``content_block_start`` text / thinking / tool_use         ``text-start`` / ``reasoning-start`` /
                                                           ``tool-input-start`` (``dynamic``)
``content_block_delta`` text / thinking / input_json       ``text-delta`` / ``reasoning-delta`` /
                                                           ``tool-input-delta``
``content_block_stop`` (text, thinking)                    ``text-end`` / ``reasoning-end`` (thinking's
                                                           signature in ``providerMetadata.anthropic``)
``assistant`` tool_use block                               ``tool-input-available``
``assistant`` line of a model call that had no stream      the whole block: start, one delta, end (a
events (no partial messages)                               new message id is a new step)
``user`` tool_result                                       ``tool-output-available`` / ``tool-output-error``
``system/api_retry``                                       ``data-turnstile-api-retry`` (transient)
``stream.ended``                                           open parts closed, ``finish-step``,
                                                           ``data-turnstile-timing``, then by outcome:
                                                           completed ``finish``; cancelled ``abort``;
                                                           failed / timed_out ``error`` + ``finish``
=========================================================  ================================================

Not mapped: lines of subagents (``parent_tool_use_id`` set: they run inside a tool call), the synthetic
``assistant`` line of an API error (its text is the ``error`` chunk's reason), echoed prompts, system
lines other than ``api_retry``, engine entries other than the turn's first and last.

Tool approvals (issue "Tool approvals from any client") plug in at :meth:`TurnMapper.approval_requested`
and :meth:`TurnMapper.approval_answered`; no log entry calls them yet (see ``docs/ai-sdk.md``).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from turnstile.adapters.ai_sdk.chunks import (
    Abort,
    ApiRetryData,
    ApiRetryPart,
    Chunk,
    ErrorChunk,
    Finish,
    FinishReason,
    FinishStep,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    Start,
    StartStep,
    TextDelta,
    TextEnd,
    TextStart,
    TimingData,
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
from turnstile.engine.log import AnyEntry, CliLine, StreamEnded, view_of
from turnstile.engine.protocol import (
    ApiRetry,
    AssistantMessage,
    ContentBlock,
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    MessageStart,
    MessageStop,
    RedactedThinkingBlock,
    ResultMessage,
    SignatureDelta,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    ThinkingDelta,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from turnstile.engine.protocol import TextDelta as CliTextDelta

__all__ = ["TurnMapper", "finish_reason"]

_FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content-filter",
    "tool_use": "tool-calls",
    "pause_turn": "other",
}


def finish_reason(stop_reason: str | None) -> FinishReason:
    """The ``finishReason`` of a completed turn from the CLI's last ``stop_reason``."""
    if stop_reason is None:
        return "stop"
    return _FINISH_REASONS.get(stop_reason, "other")


class _Part:
    """An open text or reasoning part (its chunk id) and what closes it."""

    __slots__ = ("id", "kind", "redacted", "signature")

    def __init__(self, part_id: str, kind: Literal["text", "reasoning"]) -> None:
        self.id = part_id
        self.kind = kind
        self.signature = ""
        self.redacted = ""

    def end(self) -> Chunk:
        if self.kind == "text":
            return TextEnd(id=self.id)
        meta: dict[str, Any] = {}
        if self.signature:
            meta["signature"] = self.signature
        if self.redacted:
            meta["redactedData"] = self.redacted
        return ReasoningEnd(id=self.id, provider_metadata={"anthropic": meta} if meta else None)


class _Tool:
    """A tool call of the turn: ``streaming`` its input, input ``available``, or ``done``."""

    __slots__ = ("name", "raw", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.raw = ""
        self.state: Literal["streaming", "available", "done"] = "streaming"


class TurnMapper:
    """Maps the log entries of one turn, in order, to UI message stream chunks (see the module doc)."""

    def __init__(self, turn_id: str) -> None:
        self.turn_id = turn_id
        self.started = False
        self.ended = False
        self._step: str | None = None  # the model call (API message id) of the open step
        self._step_open = False
        self._streamed: set[str] = set()  # model calls that came as stream events
        self._blocks: dict[int, _Part | str] = {}  # content block index → open part, or tool call id
        self._open: dict[str, _Part] = {}  # open text/reasoning parts by chunk id, oldest first
        self._tools: dict[str, _Tool] = {}
        self._parts = 0
        self._stop_reason: str | None = None

    # --- the log -----------------------------------------------------------------------------------

    def feed(self, entry: AnyEntry) -> list[Chunk]:
        """The chunks ``entry`` makes. After the turn's ``stream.ended`` every entry makes none."""
        if self.ended:
            return []
        out: list[Chunk] = []
        if not self.started:
            self.started = True
            out.append(Start(message_id=self.turn_id))
        if type(entry) is CliLine:
            self._cli(entry, out)
        elif type(entry) is StreamEnded:
            self._end(entry, out)
        return out

    def _cli(self, entry: CliLine, out: list[Chunk]) -> None:
        kind = entry.type
        if kind not in ("stream_event", "assistant", "user", "system", "result"):
            return
        view = view_of(entry)
        if isinstance(view, StreamEvent):
            if view.parent_tool_use_id is None:
                self._event(view, out)
        elif isinstance(view, AssistantMessage):
            # An API error's synthetic message: its text is the reason the `error` chunk carries. (A real
            # message may carry an error too, e.g. max_output_tokens: its content is shown.)
            synthetic_error = view.error is not None and view.message.model == "<synthetic>"
            if view.parent_tool_use_id is None and not synthetic_error:
                self._assistant(view, out)
        elif isinstance(view, UserMessage):
            if view.parent_tool_use_id is None and isinstance(view.message.content, list):
                self._tool_results(view.message.content, out)
        elif isinstance(view, ApiRetry):
            data = ApiRetryData(
                attempt=view.attempt,
                max_retries=view.max_retries,
                retry_delay_ms=view.retry_delay_ms,
                error_status=view.error_status,
                error=view.error,
            )
            out.append(ApiRetryPart(data=data, transient=True))
        elif isinstance(view, ResultMessage):
            self._stop_reason = view.stop_reason

    # --- model calls as stream events (--include-partial-messages) ---------------------------------

    def _event(self, view: StreamEvent, out: list[Chunk]) -> None:
        event = view.event
        if isinstance(event, ContentBlockDelta):
            self._delta(event, out)
        elif isinstance(event, ContentBlockStart):
            self._block_start(event, out)
        elif isinstance(event, ContentBlockStop):
            block = self._blocks.pop(event.index, None)
            if isinstance(block, _Part):
                self._close(block, out)
        elif isinstance(event, MessageStart):
            message_id = event.message.get("id")
            call = message_id if isinstance(message_id, str) else f"call-{self._parts}"
            self._streamed.add(call)
            self._enter_step(call, out)
        elif isinstance(event, MessageStop):
            for block in list(self._blocks.values()):
                if isinstance(block, _Part):
                    self._close(block, out)
            self._blocks.clear()

    def _block_start(self, event: ContentBlockStart, out: list[Chunk]) -> None:
        block = event.content_block
        if not self._step_open:
            self._enter_step(f"call-{self._parts}", out)  # stream events without a message_start
        if isinstance(block, TextBlock):
            part = self._open_part("text", out)
            self._blocks[event.index] = part
            if block.text:
                out.append(TextDelta(id=part.id, delta=block.text))
        elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            part = self._open_part("reasoning", out)
            self._blocks[event.index] = part
            if isinstance(block, RedactedThinkingBlock):
                part.redacted = block.data
            elif block.thinking:
                out.append(ReasoningDelta(id=part.id, delta=block.thinking))
        elif isinstance(block, ToolUseBlock):
            self._tool_start(block.id, block.name, out)
            self._blocks[event.index] = block.id

    def _delta(self, event: ContentBlockDelta, out: list[Chunk]) -> None:
        block = self._blocks.get(event.index)
        delta = event.delta
        if isinstance(block, _Part):
            if isinstance(delta, CliTextDelta | ThinkingDelta):
                text = delta.text if isinstance(delta, CliTextDelta) else delta.thinking
                if text and block.kind == "text":
                    out.append(TextDelta(id=block.id, delta=text))
                elif text:
                    out.append(ReasoningDelta(id=block.id, delta=text))
            elif isinstance(delta, SignatureDelta):
                block.signature += delta.signature
        elif isinstance(block, str) and isinstance(delta, InputJsonDelta) and delta.partial_json:
            tool = self._tools.get(block)
            if tool is not None and tool.state == "streaming":
                tool.raw += delta.partial_json
                out.append(ToolInputDelta(tool_call_id=block, input_text_delta=delta.partial_json))

    # --- whole messages ----------------------------------------------------------------------------

    def _assistant(self, view: AssistantMessage, out: list[Chunk]) -> None:
        message = view.message
        call = message.id if message.id is not None else f"call-{self._parts}"
        if call in self._streamed:
            # Already streamed block by block: only a tool call's complete input is new here.
            for block in message.content:
                if isinstance(block, ToolUseBlock):
                    self._tool_input(block, out)
            return
        self._enter_step(call, out)
        for block in message.content:
            self._whole_block(block, out)

    def _whole_block(self, block: ContentBlock, out: list[Chunk]) -> None:
        if isinstance(block, TextBlock):
            if block.text:
                part = self._open_part("text", out)
                out.append(TextDelta(id=part.id, delta=block.text))
                self._close(part, out)
        elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            part = self._open_part("reasoning", out)
            if isinstance(block, RedactedThinkingBlock):
                part.redacted = block.data
            else:
                part.signature = block.signature
                if block.thinking:
                    out.append(ReasoningDelta(id=part.id, delta=block.thinking))
            self._close(part, out)
        elif isinstance(block, ToolUseBlock):
            self._tool_input(block, out)

    def _tool_results(self, content: list[ContentBlock], out: list[Chunk]) -> None:
        for block in content:
            if not isinstance(block, ToolResultBlock):
                continue
            tool = self._tools.get(block.tool_use_id)
            if tool is None or tool.state == "done":
                continue  # not a call of this turn's message (or already answered): the client has no part
            tool.state = "done"
            output = _tool_output(block.content)
            if block.is_error:
                text = output if isinstance(output, str) else msgspec.json.encode(output).decode()
                out.append(
                    ToolOutputError(
                        tool_call_id=block.tool_use_id, error_text=text or "the tool failed", dynamic=True
                    )
                )
            else:
                out.append(ToolOutputAvailable(tool_call_id=block.tool_use_id, output=output, dynamic=True))

    # --- tool approvals (the seam for "Tool approvals from any client") -----------------------------

    def approval_requested(self, approval_id: str, tool_call_id: str) -> list[Chunk]:
        """The chunks for a pending permission request (``can_use_tool``) on a tool call of this turn.

        ``approval_id`` is the CLI's ``request_id``; ``tool_call_id`` its ``tool_use_id``. Nothing for a
        call the client has no part for (the SDK would reject the chunk). Not yet called: the future
        ``approval.requested`` log entry maps here.
        """
        tool = self._tools.get(tool_call_id)
        if self.ended or tool is None or tool.state == "done":
            return []
        return [ToolApprovalRequest(approval_id=approval_id, tool_call_id=tool_call_id)]

    def approval_answered(self, tool_call_id: str, *, approved: bool) -> list[Chunk]:
        """The chunks for an answered permission request: ``tool-output-denied`` when denied (the
        CLI's error ``tool_result`` that follows is then not sent again); nothing when allowed (the
        tool's output follows as usual). Not yet called: the future answer entry maps here."""
        tool = self._tools.get(tool_call_id)
        if approved or self.ended or tool is None or tool.state == "done":
            return []
        tool.state = "done"
        return [ToolOutputDenied(tool_call_id=tool_call_id)]

    # --- the end -------------------------------------------------------------------------------------

    def _end(self, entry: StreamEnded, out: list[Chunk]) -> None:
        self.ended = True
        why = entry.reason or f"the turn ended {entry.outcome.replace('_', ' ')}"
        for part in list(self._open.values()):
            self._close(part, out)
        for call_id, tool in self._tools.items():
            if tool.state == "streaming":
                out.append(
                    ToolInputError(
                        tool_call_id=call_id,
                        tool_name=tool.name,
                        input=_partial_input(tool.raw),
                        error_text=f"the tool call was never completed: {why}",
                        dynamic=True,
                    )
                )
            elif tool.state == "available":
                out.append(
                    ToolOutputError(
                        tool_call_id=call_id, error_text=f"the tool did not finish: {why}", dynamic=True
                    )
                )
            tool.state = "done"
        self._close_step(out)
        out.append(TimingPart(id="timing", data=_timing(entry)))
        if entry.outcome == "completed":
            out.append(Finish(finish_reason=finish_reason(self._stop_reason)))
        elif entry.outcome == "cancelled":
            out.append(Abort(reason=why))
        else:
            out.append(ErrorChunk(error_text=why))
            out.append(Finish(finish_reason="error"))

    # --- helpers -------------------------------------------------------------------------------------

    def _enter_step(self, call: str, out: list[Chunk]) -> None:
        if self._step_open and self._step == call:
            return
        self._close_step(out)
        self._step = call
        self._step_open = True
        out.append(StartStep())

    def _close_step(self, out: list[Chunk]) -> None:
        if not self._step_open:
            return
        for part in list(self._open.values()):
            self._close(part, out)
        self._blocks.clear()
        self._step_open = False
        out.append(FinishStep())

    def _open_part(self, kind: Literal["text", "reasoning"], out: list[Chunk]) -> _Part:
        self._parts += 1
        part = _Part(f"{self.turn_id}-{self._parts}", kind)
        self._open[part.id] = part
        out.append(TextStart(id=part.id) if kind == "text" else ReasoningStart(id=part.id))
        return part

    def _close(self, part: _Part, out: list[Chunk]) -> None:
        if self._open.pop(part.id, None) is not None:
            out.append(part.end())

    def _tool_start(self, call_id: str, name: str, out: list[Chunk]) -> None:
        if call_id not in self._tools:
            self._tools[call_id] = _Tool(name)
            out.append(ToolInputStart(tool_call_id=call_id, tool_name=name, dynamic=True))

    def _tool_input(self, block: ToolUseBlock, out: list[Chunk]) -> None:
        self._tool_start(block.id, block.name, out)
        tool = self._tools[block.id]
        if tool.state == "streaming":
            tool.state = "available"
            out.append(
                ToolInputAvailable(
                    tool_call_id=block.id, tool_name=block.name, input=block.input, dynamic=True
                )
            )


def _timing(entry: StreamEnded) -> TimingData:
    timing = msgspec.structs.asdict(entry.timing) if entry.timing is not None else {}
    return TimingData(outcome=entry.outcome, reason=entry.reason, **timing)


def _tool_output(content: str | list[Any] | None) -> Any:
    """A tool_result's content as the tool part's output: text stays text (text blocks joined); other
    content (images, ...) is passed as the CLI's blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
    if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
        return "\n".join(texts)  # type: ignore[arg-type]
    return content


def _partial_input(raw: str) -> Any:
    """What a cut-off tool input was: its JSON if it parses, else the text."""
    if not raw:
        return {}
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw
