"""The Claude Code CLI's ``stream-json`` messages as types (sans-IO).

Every stdout line of ``claude -p --output-format stream-json --verbose`` is a JSON object with a string
``type``. This module gives each known ``type`` a frozen :mod:`msgspec` Struct in a tagged union
(:data:`StdoutMessage`) and decodes one line at a time with :func:`decode_line`.

Lossless by construction: the log keeps each CLI line's bytes exactly as received (see
:class:`engine.log.CliLine`); the types here are a *view* decoded from those bytes, on demand. So a field
this module does not know is never lost — it is only not typed yet.

Bad input is data, never an exception:

* an unknown ``type`` decodes to :class:`UnknownMessage` (the official SDK drops these; we keep them);
* an unknown content block decodes to :class:`UnknownBlock` inside an otherwise typed message (the SDK
  drops these too); likewise :class:`UnknownStreamEvent` and :class:`UnknownDelta`;
* a known ``type`` missing a required field decodes to :class:`InvalidMessage` with the reason;
* a line that is not a JSON object is a :class:`LineError` (``noise``, ``malformed`` or ``no_type``).

Field names follow the CLI's JSON; where the CLI uses camelCase the attribute is snake_case and the
JSON name is given with ``msgspec.field(name=...)``. Key order in the JSON never matters.

Lazy fields: a few bulky values that nothing in Turnstile reads per line — ``system/init``'s lists of
tools, commands, agents, skills, plugins and capabilities, an assistant message's ``usage``, a result's
``modelUsage`` and ``permission_denials``, a user line's ``tool_use_result`` — are kept by the decode as
their raw JSON (``<name>_json``: a :class:`msgspec.Raw` pointing into the line, no copy) and decoded when the
attribute is read (:class:`LazyJson`). Decoding them eagerly was a third of the cost of those lines (dozens
of small strings and dicts each, and every turn starts with a ``system/init`` of ~2 KB). A value of
another shape than the attribute's type reads as the attribute's default; its JSON stays in ``<name>_json``.
"""

from __future__ import annotations

import copy
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar, overload

import msgspec

__all__ = [
    "AdvisorToolResultBlock",
    "ApiMessage",
    "ApiRetry",
    "AssistantMessage",
    "CompactBoundary",
    "ContentBlock",
    "ContentBlockDelta",
    "ContentBlockStart",
    "ContentBlockStop",
    "ControlCancelRequest",
    "ControlRequest",
    "ControlResponse",
    "ControlResponseBody",
    "ConversationReset",
    "Delta",
    "HookEvent",
    "ImageBlock",
    "InputJsonDelta",
    "InvalidMessage",
    "KeepAlive",
    "LazyJson",
    "LineError",
    "Message",
    "MessageDelta",
    "MessageStart",
    "MessageStop",
    "RateLimitEvent",
    "RateLimitInfo",
    "RedactedThinkingBlock",
    "ResultMessage",
    "ServerToolUseBlock",
    "SessionStateChanged",
    "SignatureDelta",
    "StdoutMessage",
    "StreamEvent",
    "StreamEventPayload",
    "SystemInit",
    "SystemMessage",
    "SystemStatus",
    "TaskNotification",
    "TaskProgress",
    "TaskStarted",
    "TaskUpdated",
    "TextBlock",
    "TextDelta",
    "ThinkingBlock",
    "ThinkingDelta",
    "ThinkingTokens",
    "ToolResultBlock",
    "ToolUseBlock",
    "UnknownBlock",
    "UnknownDelta",
    "UnknownMessage",
    "UnknownStreamEvent",
    "UserContent",
    "UserMessage",
    "decode_line",
    "decode_message",
    "encode_stdin",
    "initialize_request",
    "interrupt_request",
    "user_input",
]


_T = TypeVar("_T")


class LazyJson(Generic[_T]):
    """A view attribute decoded from the raw JSON of the view's ``<name>_json`` field when it is read.

    Each read decodes afresh (views are frozen and immutable; a fresh list cannot be changed behind the
    view's back). A value that does not fit the attribute's type (or is not valid JSON, UTF-8 or nested too
    deeply), or is absent, reads as ``default``: reading never raises.
    """

    __slots__ = ("_decoder", "_default", "_field", "name")

    def __init__(self, field: str, type_: Any, default: _T) -> None:
        self._field = field
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(type_)
        self._default = default
        self.name = field.removesuffix("_json")

    @overload
    def __get__(self, obj: None, owner: type) -> LazyJson[_T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> _T: ...
    def __get__(self, obj: object, owner: type) -> LazyJson[_T] | _T:
        if obj is None:
            return self
        raw: msgspec.Raw = getattr(obj, self._field)
        try:
            return self._decoder.decode(raw)  # type: ignore[no-any-return]
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return copy.copy(self._default)  # a fresh [] each time, as a decode would give


def _raw_field(name: str, default: bytes) -> Any:
    """A struct field holding the raw JSON of the CLI's ``name`` (``default`` when the key is absent)."""
    return msgspec.field(default=msgspec.Raw(default), name=name)


class _Frozen(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Base of every typed view: immutable, keyword-only, unknown JSON fields ignored (kept in raw).

    Not tracked by the cyclic garbage collector (``gc=False``): a view holds JSON-decoded data only, which
    can form no cycle, and every CLI line makes one or more views — tracking them would run the collector
    several times per stdout chunk. (Do not build a view around a container that refers back to it.)
    """


# --------------------------------------------------------------------------------------------------
# Content blocks (inside assistant/user messages and content_block_start events)
# --------------------------------------------------------------------------------------------------


class _Block(_Frozen, frozen=True, kw_only=True, tag_field="type"):
    pass


class TextBlock(_Block, frozen=True, kw_only=True, tag="text"):
    """Plain text."""

    text: str


class ThinkingBlock(_Block, frozen=True, kw_only=True, tag="thinking"):
    """Extended thinking. Newer CLIs often send empty ``thinking`` with only a ``signature``."""

    thinking: str = ""
    signature: str = ""


class RedactedThinkingBlock(_Block, frozen=True, kw_only=True, tag="redacted_thinking"):
    """Thinking the API returned encrypted."""

    data: str = ""


class ToolUseBlock(_Block, frozen=True, kw_only=True, tag="tool_use"):
    """A client-side tool call (the CLI runs it and answers with a ``tool_result``)."""

    id: str
    name: str
    input: dict[str, Any] = {}


class ServerToolUseBlock(_Block, frozen=True, kw_only=True, tag="server_tool_use"):
    """A server-side tool call (web_search, web_fetch, advisor, code_execution, ...)."""

    id: str
    name: str
    input: dict[str, Any] = {}


class ToolResultBlock(_Block, frozen=True, kw_only=True, tag="tool_result"):
    """The result of a tool call; ``content`` is a string, a list of blocks, or absent."""

    tool_use_id: str
    content: str | list[Any] | None = None
    is_error: bool | None = None


class AdvisorToolResultBlock(_Block, frozen=True, kw_only=True, tag="advisor_tool_result"):
    """The advisor server tool's result; its content stays a dict."""

    tool_use_id: str
    content: dict[str, Any] = {}


class ImageBlock(_Block, frozen=True, kw_only=True, tag="image"):
    """An image (in user content)."""

    source: dict[str, Any] = {}


class UnknownBlock(_Block, frozen=True, kw_only=True, tag="__unknown_block__"):
    """A content block of a type this version does not model (kept, not dropped).

    ``kind`` is the block's ``type``; ``raw`` its JSON. (The tag is a placeholder that lets the block
    sit in the typed union; decoding never produces it from the wire.)
    """

    kind: str
    raw: bytes


KnownBlock: TypeAlias = (
    TextBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ToolUseBlock
    | ServerToolUseBlock
    | ToolResultBlock
    | AdvisorToolResultBlock
    | ImageBlock
)
ContentBlock: TypeAlias = KnownBlock | UnknownBlock


class ApiMessage(_Frozen, frozen=True, kw_only=True):
    """The ``message`` of an ``assistant`` line: one Anthropic API message (one block per line)."""

    model: str
    content: list[ContentBlock]
    id: str | None = None
    role: str = "assistant"
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage_json: msgspec.Raw = _raw_field("usage", b"null")

    usage = LazyJson[dict[str, Any] | None]("usage_json", dict[str, Any] | None, None)  # lazy: see the module


class UserContent(_Frozen, frozen=True, kw_only=True):
    """The ``message`` of a ``user`` line: a string or a list of blocks."""

    content: str | list[ContentBlock]
    role: str = "user"


# --------------------------------------------------------------------------------------------------
# Top-level stdout messages
# --------------------------------------------------------------------------------------------------


class _Message(_Frozen, frozen=True, kw_only=True, tag_field="type"):
    pass


class SystemMessage(_Message, frozen=True, kw_only=True, tag="system"):
    """Any ``system`` line. Known subtypes decode to the subclasses below; others stay generic."""

    subtype: str
    session_id: str | None = None
    uuid: str | None = None


class SystemInit(SystemMessage, frozen=True, kw_only=True):
    """``system/init``: printed at the start of *every* turn, not once per process."""

    cwd: str | None = None
    model: str | None = None
    permission_mode: str | None = msgspec.field(default=None, name="permissionMode")
    api_key_source: str | None = msgspec.field(default=None, name="apiKeySource")
    claude_code_version: str | None = None
    output_style: str | None = None
    tools_json: msgspec.Raw = _raw_field("tools", b"[]")
    mcp_servers_json: msgspec.Raw = _raw_field("mcp_servers", b"[]")
    slash_commands_json: msgspec.Raw = _raw_field("slash_commands", b"[]")
    agents_json: msgspec.Raw = _raw_field("agents", b"[]")
    skills_json: msgspec.Raw = _raw_field("skills", b"[]")
    plugins_json: msgspec.Raw = _raw_field("plugins", b"[]")
    capabilities_json: msgspec.Raw = _raw_field("capabilities", b"[]")

    # Lazy (see the module's docstring): read per line by nothing, and most of the line's bytes.
    tools = LazyJson[list[str]]("tools_json", list[str], [])
    mcp_servers = LazyJson[list[Any]]("mcp_servers_json", list[Any], [])
    slash_commands = LazyJson[list[str]]("slash_commands_json", list[str], [])
    agents = LazyJson[list[Any]]("agents_json", list[Any], [])
    skills = LazyJson[list[Any]]("skills_json", list[Any], [])
    plugins = LazyJson[list[Any]]("plugins_json", list[Any], [])
    capabilities = LazyJson[list[Any]]("capabilities_json", list[Any], [])


class SystemStatus(SystemMessage, frozen=True, kw_only=True):
    """``system/status``: ``requesting`` / ``compacting`` / null, with compaction results."""

    status: str | None = None
    compact_result: str | None = None
    compact_error: str | None = None


class CompactBoundary(SystemMessage, frozen=True, kw_only=True):
    """``system/compact_boundary``: the conversation was compacted."""

    compact_metadata: dict[str, Any] = {}
    logical_parent_uuid: str | None = None


class ApiRetry(SystemMessage, frozen=True, kw_only=True):
    """``system/api_retry``: the CLI is retrying a failed API call (a turn may be silent for minutes)."""

    attempt: int | None = None
    max_retries: int | None = None
    retry_delay_ms: float | None = None
    error_status: int | None = None
    error: str | None = None


class ThinkingTokens(SystemMessage, frozen=True, kw_only=True):
    """``system/thinking_tokens``: an estimate of thinking tokens so far."""

    estimated_tokens: int | None = None
    estimated_tokens_delta: int | None = None


class TaskStarted(SystemMessage, frozen=True, kw_only=True):
    """``system/task_started``: a background task (a Bash tool, a sub-agent) began."""

    task_id: str | None = None
    description: str | None = None
    task_type: str | None = None
    tool_use_id: str | None = None


class TaskProgress(SystemMessage, frozen=True, kw_only=True):
    """``system/task_progress``."""

    task_id: str | None = None
    usage: dict[str, Any] | None = None
    last_tool_name: str | None = None


class TaskNotification(SystemMessage, frozen=True, kw_only=True):
    """``system/task_notification``: a task completed, failed or was stopped."""

    task_id: str | None = None
    status: str | None = None
    output_file: str | None = None
    summary: str | None = None
    usage: dict[str, Any] | None = None


class TaskUpdated(SystemMessage, frozen=True, kw_only=True):
    """``system/task_updated``. ``patch`` is whatever the CLI sent; use :attr:`status` to read it."""

    task_id: str | None = None
    patch: Any = None

    @property
    def status(self) -> str | None:
        """The patch's status, or None when the patch is absent, not an object, or has none."""
        if isinstance(self.patch, dict):
            value = self.patch.get("status")
            return value if isinstance(value, str) else None
        return None


class HookEvent(SystemMessage, frozen=True, kw_only=True):
    """``system/hook_started`` and ``system/hook_response`` (with ``--include-hook-events``)."""

    hook_event: str | None = None
    hook_name: str | None = None
    hook_event_name: str | None = None
    output: Any = None
    exit_code: int | None = None
    outcome: str | None = None

    @property
    def name(self) -> str | None:
        """The hook's name, resolved as the SDK does: hook_event, then hook_name, then hook_event_name."""
        return self.hook_event or self.hook_name or self.hook_event_name


class SessionStateChanged(SystemMessage, frozen=True, kw_only=True):
    """``system/session_state_changed``: ``running`` or ``idle``."""

    state: str | None = None


class AssistantMessage(_Message, frozen=True, kw_only=True, tag="assistant"):
    """One content block of the model's answer (the CLI writes one line per block)."""

    message: ApiMessage
    parent_tool_use_id: str | None = None
    session_id: str | None = None
    uuid: str | None = None
    error: str | None = None
    aborted: bool | None = None


class UserMessage(_Message, frozen=True, kw_only=True, tag="user"):
    """A user line: tool results, interrupt notices, and (with ``--replay-user-messages``) echoes."""

    message: UserContent
    parent_tool_use_id: str | None = None
    session_id: str | None = None
    uuid: str | None = None
    tool_use_result_json: msgspec.Raw = _raw_field("tool_use_result", b"null")
    is_replay: bool | None = msgspec.field(default=None, name="isReplay")
    is_synthetic: bool | None = msgspec.field(default=None, name="isSynthetic")
    origin: Any = None

    tool_use_result = LazyJson[Any]("tool_use_result_json", Any, None)  # lazy: see the module

    @property
    def origin_kind(self) -> str | None:
        """``origin.kind`` when origin is an object with a string kind, else None (as the SDK does)."""
        if isinstance(self.origin, dict):
            kind = self.origin.get("kind")
            return kind if isinstance(kind, str) else None
        return None

    @property
    def text(self) -> str:
        """All text of the message: the string content, or its text blocks joined."""
        content = self.message.content
        if isinstance(content, str):
            return content
        return "".join(b.text for b in content if isinstance(b, TextBlock))


class ResultMessage(_Message, frozen=True, kw_only=True, tag="result"):
    """The end of a turn. ``total_cost_usd`` is cumulative per process, not per turn."""

    subtype: str
    is_error: bool
    duration_ms: float
    duration_api_ms: float
    num_turns: int
    session_id: str
    result: str | None = None
    total_cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    model_usage_json: msgspec.Raw = _raw_field("modelUsage", b"null")
    permission_denials_json: msgspec.Raw = _raw_field("permission_denials", b"null")
    stop_reason: str | None = None
    errors: list[str] | None = None
    api_error_status: int | None = None
    terminal_reason: str | None = None
    structured_output: Any = None
    deferred_tool_use: dict[str, Any] | None = None
    origin: Any = None
    uuid: str | None = None

    # Lazy (see the module's docstring). ``usage`` is not: the fold reads it at every result.
    model_usage = LazyJson[dict[str, Any] | None]("model_usage_json", dict[str, Any] | None, None)
    permission_denials = LazyJson[list[Any] | None]("permission_denials_json", list[Any] | None, None)


# stream_event payloads (raw Anthropic streaming events) --------------------------------------------


class _Delta(_Frozen, frozen=True, kw_only=True, tag_field="type"):
    pass


class TextDelta(_Delta, frozen=True, kw_only=True, tag="text_delta"):
    """A few characters of text."""

    text: str


class InputJsonDelta(_Delta, frozen=True, kw_only=True, tag="input_json_delta"):
    """A fragment of a tool call's JSON input (the first may be empty)."""

    partial_json: str = ""


class ThinkingDelta(_Delta, frozen=True, kw_only=True, tag="thinking_delta"):
    """A fragment of thinking."""

    thinking: str = ""


class SignatureDelta(_Delta, frozen=True, kw_only=True, tag="signature_delta"):
    """The thinking block's signature."""

    signature: str = ""


class UnknownDelta(_Delta, frozen=True, kw_only=True, tag="__unknown_delta__"):
    """A delta type this version does not model; ``kind`` is its ``type``."""

    kind: str
    raw: bytes


Delta: TypeAlias = TextDelta | InputJsonDelta | ThinkingDelta | SignatureDelta | UnknownDelta


class _Event(_Frozen, frozen=True, kw_only=True, tag_field="type"):
    pass


class MessageStart(_Event, frozen=True, kw_only=True, tag="message_start"):
    """An API message begins (a turn has one per model call; tool turns have several)."""

    message: dict[str, Any] = {}


class ContentBlockStart(_Event, frozen=True, kw_only=True, tag="content_block_start"):
    """A content block begins: text, thinking or tool_use. A lifecycle event."""

    index: int
    content_block: ContentBlock


class ContentBlockDelta(_Event, frozen=True, kw_only=True, tag="content_block_delta"):
    """A token delta. Appended and fanned out; never fires a transition."""

    index: int
    delta: Delta


class ContentBlockStop(_Event, frozen=True, kw_only=True, tag="content_block_stop"):
    """A content block ends."""

    index: int


class MessageDelta(_Event, frozen=True, kw_only=True, tag="message_delta"):
    """The API message's stop reason and final usage."""

    delta: dict[str, Any] = {}
    usage: dict[str, Any] | None = None

    @property
    def stop_reason(self) -> str | None:
        """``delta.stop_reason`` (``end_turn``, ``tool_use``, ...)."""
        value = self.delta.get("stop_reason")
        return value if isinstance(value, str) else None


class MessageStop(_Event, frozen=True, kw_only=True, tag="message_stop"):
    """An API message ends."""


class Ping(_Event, frozen=True, kw_only=True, tag="ping"):
    """A keep-alive inside the API stream."""


class UnknownStreamEvent(_Event, frozen=True, kw_only=True, tag="__unknown_event__"):
    """A streaming event type this version does not model; ``kind`` is its ``type``."""

    kind: str
    raw: bytes


KnownStreamEvent: TypeAlias = (
    MessageStart
    | ContentBlockStart
    | ContentBlockDelta
    | ContentBlockStop
    | MessageDelta
    | MessageStop
    | Ping
)
StreamEventPayload: TypeAlias = KnownStreamEvent | UnknownStreamEvent


class StreamEvent(_Message, frozen=True, kw_only=True, tag="stream_event"):
    """A partial message (``--include-partial-messages``): one raw API streaming event."""

    event: StreamEventPayload
    session_id: str | None = None
    uuid: str | None = None
    parent_tool_use_id: str | None = None


# control protocol -----------------------------------------------------------------------------------


class ControlRequest(_Message, frozen=True, kw_only=True, tag="control_request"):
    """A control request (either direction). ``request`` holds ``subtype`` and its fields."""

    request_id: str
    request: dict[str, Any]

    @property
    def subtype(self) -> str | None:
        """``request.subtype`` (``interrupt``, ``initialize``, ``can_use_tool``, ...)."""
        value = self.request.get("subtype")
        return value if isinstance(value, str) else None


class ControlResponseBody(_Frozen, frozen=True, kw_only=True):
    """The body of a control response: ``success`` with an optional payload, or ``error``."""

    subtype: str
    request_id: str | None = None
    response: dict[str, Any] | None = None
    error: str | None = None


class ControlResponse(_Message, frozen=True, kw_only=True, tag="control_response"):
    """The answer to a control request, paired by ``response.request_id``."""

    response: ControlResponseBody


class ControlCancelRequest(_Message, frozen=True, kw_only=True, tag="control_cancel_request"):
    """The sender withdraws its own pending request; no reply is due."""

    request_id: str


class RateLimitInfo(_Frozen, frozen=True, kw_only=True):
    """Rate-limit status (``allowed``, ``allowed_warning``, ``rejected``) and optional details."""

    status: str
    resets_at: float | None = msgspec.field(default=None, name="resetsAt")
    rate_limit_type: str | None = msgspec.field(default=None, name="rateLimitType")
    utilization: float | None = None
    overage_status: str | None = msgspec.field(default=None, name="overageStatus")
    overage_resets_at: float | None = msgspec.field(default=None, name="overageResetsAt")
    overage_disabled_reason: str | None = msgspec.field(default=None, name="overageDisabledReason")
    is_using_overage: bool | None = msgspec.field(default=None, name="isUsingOverage")


class RateLimitEvent(_Message, frozen=True, kw_only=True, tag="rate_limit_event"):
    """The account's rate-limit status changed."""

    rate_limit_info: RateLimitInfo
    session_id: str | None = None
    uuid: str | None = None


class KeepAlive(_Message, frozen=True, kw_only=True, tag="keep_alive"):
    """A keep-alive (declared by the TypeScript SDK; not seen in recordings)."""


class ConversationReset(_Message, frozen=True, kw_only=True, tag="conversation_reset"):
    """After ``/clear``: totals on later results restart."""

    new_conversation_id: str
    session_id: str | None = None
    uuid: str | None = None


StdoutMessage: TypeAlias = (
    SystemMessage
    | AssistantMessage
    | UserMessage
    | ResultMessage
    | StreamEvent
    | ControlRequest
    | ControlResponse
    | ControlCancelRequest
    | RateLimitEvent
    | KeepAlive
    | ConversationReset
)


# --------------------------------------------------------------------------------------------------
# Fallbacks: bad input is data
# --------------------------------------------------------------------------------------------------


class UnknownMessage(_Frozen, frozen=True, kw_only=True):
    """A JSON object whose ``type`` this version does not model (e.g. ``active_goal``)."""

    type: str
    raw: bytes


class InvalidMessage(_Frozen, frozen=True, kw_only=True):
    """A known ``type`` that does not fit its schema (e.g. missing a required field)."""

    type: str
    error: str
    raw: bytes


Message: TypeAlias = StdoutMessage | UnknownMessage | InvalidMessage

LineErrorReason: TypeAlias = Literal["noise", "malformed", "no_type"]


class LineError(_Frozen, frozen=True, kw_only=True):
    """A line that is not a JSON object with a string ``type``.

    ``noise`` — does not start with ``{`` (some CLI builds print debug text on stdout);
    ``malformed`` — starts with ``{`` but is not valid JSON (or not valid UTF-8);
    ``no_type`` — valid JSON but not an object with a string ``type``.
    """

    reason: LineErrorReason
    error: str


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------

_decoder: Final[msgspec.json.Decoder[StdoutMessage]] = msgspec.json.Decoder(StdoutMessage)
_stream_decoder: Final[msgspec.json.Decoder[StreamEvent]] = msgspec.json.Decoder(StreamEvent)
_result_decoder: Final[msgspec.json.Decoder[ResultMessage]] = msgspec.json.Decoder(ResultMessage)
_block_decoder: Final[msgspec.json.Decoder[KnownBlock]] = msgspec.json.Decoder(KnownBlock)
_KnownDelta: TypeAlias = TextDelta | InputJsonDelta | ThinkingDelta | SignatureDelta
_delta_decoder: Final[msgspec.json.Decoder[_KnownDelta]] = msgspec.json.Decoder(_KnownDelta)
_event_decoder: Final[msgspec.json.Decoder[KnownStreamEvent]] = msgspec.json.Decoder(KnownStreamEvent)

_SYSTEM_VIEWS: Final[dict[str, type[SystemMessage]]] = {
    "init": SystemInit,
    "status": SystemStatus,
    "compact_boundary": CompactBoundary,
    "api_retry": ApiRetry,
    "thinking_tokens": ThinkingTokens,
    "task_started": TaskStarted,
    "task_progress": TaskProgress,
    "task_notification": TaskNotification,
    "task_updated": TaskUpdated,
    "hook_started": HookEvent,
    "hook_response": HookEvent,
    "session_state_changed": SessionStateChanged,
}
_system_decoders: Final = {name: msgspec.json.Decoder(cls) for name, cls in _SYSTEM_VIEWS.items()}
_SYSTEM_MARK: Final = b'"type":"system","subtype":"'
_SYSTEM_MARK_LEN: Final = len(_SYSTEM_MARK)


def _subtype_key(data: bytes, at: int) -> int:
    """A cheap key of the subtype starting at ``data[at]``: its first and sixth bytes (for ``init``, the
    comma after it)."""
    return data[at] << 8 | data[at + 5]


def _system_fast_table() -> dict[int, tuple[str, msgspec.json.Decoder[Any]]]:
    table: dict[int, tuple[str, msgspec.json.Decoder[Any]]] = {}
    clashes: set[int] = set()
    for name, decoder in _system_decoders.items():
        key = _subtype_key(name.encode() + b'",', 0)
        if key in table:
            clashes.add(key)
        table[key] = (name, decoder)
    for key in clashes:  # subtypes that share a key take the general path
        del table[key]
    return table


# The system fast path's table: key of the subtype as written -> (subtype, its view's decoder). The key only
# picks a candidate; the decoded view's subtype must then be the candidate's.
_SYSTEM_FAST: Final = _system_fast_table()


class _Envelope(msgspec.Struct):
    type: str


class _Typed(msgspec.Struct):
    type: str


class _LenientApiMessage(msgspec.Struct, kw_only=True):
    model: str
    content: list[msgspec.Raw]
    id: str | None = None
    role: str = "assistant"
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: msgspec.Raw = msgspec.Raw(b"null")


class _LenientAssistant(msgspec.Struct, kw_only=True):
    message: _LenientApiMessage
    parent_tool_use_id: str | None = None
    session_id: str | None = None
    uuid: str | None = None
    error: str | None = None
    aborted: bool | None = None


class _LenientUserContent(msgspec.Struct, kw_only=True):
    content: str | list[msgspec.Raw]
    role: str = "user"


class _LenientUser(msgspec.Struct, kw_only=True):
    message: _LenientUserContent
    parent_tool_use_id: str | None = None
    session_id: str | None = None
    uuid: str | None = None
    tool_use_result: msgspec.Raw = msgspec.Raw(b"null")
    is_replay: bool | None = msgspec.field(default=None, name="isReplay")
    is_synthetic: bool | None = msgspec.field(default=None, name="isSynthetic")
    origin: Any = None


class _LenientBlockStart(msgspec.Struct, kw_only=True):
    index: int
    content_block: msgspec.Raw


class _LenientBlockDelta(msgspec.Struct, kw_only=True):
    index: int
    delta: msgspec.Raw


class _LenientStreamEvent(msgspec.Struct, kw_only=True):
    event: msgspec.Raw
    session_id: str | None = None
    uuid: str | None = None
    parent_tool_use_id: str | None = None


def _block(raw: msgspec.Raw) -> ContentBlock:
    data = bytes(raw)
    try:
        return _block_decoder.decode(data)
    except msgspec.ValidationError:
        # Unknown block types are kept whole; a block that is not even an object with a type is an
        # error of the enclosing message, raised to the caller.
        return UnknownBlock(kind=msgspec.json.decode(data, type=_Typed).type, raw=data)


def _delta(raw: msgspec.Raw) -> Delta:
    data = bytes(raw)
    try:
        return _delta_decoder.decode(data)
    except msgspec.ValidationError:
        return UnknownDelta(kind=msgspec.json.decode(data, type=_Typed).type, raw=data)


def _stream_payload(raw: msgspec.Raw) -> StreamEventPayload:
    data = bytes(raw)
    try:
        return _event_decoder.decode(data)
    except msgspec.ValidationError:
        kind = msgspec.json.decode(data, type=_Typed).type
        if kind == "content_block_start":
            start = msgspec.json.decode(data, type=_LenientBlockStart)
            return ContentBlockStart(index=start.index, content_block=_block(start.content_block))
        if kind == "content_block_delta":
            delta = msgspec.json.decode(data, type=_LenientBlockDelta)
            return ContentBlockDelta(index=delta.index, delta=_delta(delta.delta))
        if kind in _KNOWN_EVENTS:
            raise
        return UnknownStreamEvent(kind=kind, raw=data)


_KNOWN_EVENTS: Final = frozenset(
    {"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta"}
    | {"message_stop", "ping"}
)


def _lenient(kind: str, raw: bytes) -> Message:
    """Second chance for a known type that failed strict decoding: unknown nested variants."""
    if kind == "assistant":
        a = msgspec.json.decode(raw, type=_LenientAssistant)
        m = a.message
        return AssistantMessage(
            message=ApiMessage(
                model=m.model,
                content=[_block(b) for b in m.content],
                id=m.id,
                role=m.role,
                stop_reason=m.stop_reason,
                stop_sequence=m.stop_sequence,
                usage_json=m.usage,
            ),
            parent_tool_use_id=a.parent_tool_use_id,
            session_id=a.session_id,
            uuid=a.uuid,
            error=a.error,
            aborted=a.aborted,
        )
    if kind == "user":
        u = msgspec.json.decode(raw, type=_LenientUser)
        content = u.message.content
        return UserMessage(
            message=UserContent(
                content=content if isinstance(content, str) else [_block(b) for b in content],
                role=u.message.role,
            ),
            parent_tool_use_id=u.parent_tool_use_id,
            session_id=u.session_id,
            uuid=u.uuid,
            tool_use_result_json=u.tool_use_result,
            is_replay=u.is_replay,
            is_synthetic=u.is_synthetic,
            origin=u.origin,
        )
    if kind == "stream_event":
        s = msgspec.json.decode(raw, type=_LenientStreamEvent)
        return StreamEvent(
            event=_stream_payload(s.event),
            session_id=s.session_id,
            uuid=s.uuid,
            parent_tool_use_id=s.parent_tool_use_id,
        )
    raise msgspec.ValidationError(f"no lenient schema for {kind!r}")


_KNOWN_TYPES: Final = frozenset(
    {"system", "assistant", "user", "result", "stream_event", "control_request", "control_response"}
    | {"control_cancel_request", "rate_limit_event", "keep_alive", "conversation_reset"}
)


def _specialise_system(msg: SystemMessage, raw: bytes) -> SystemMessage:
    decoder = _system_decoders.get(msg.subtype)
    if decoder is None:
        return msg
    try:
        view: SystemMessage = decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # A known subtype with an odd field stays a generic system message rather than an error:
        # the subtype's fields are optional extras, and the raw line keeps them all.
        return msg
    return view


def decode_message(raw: bytes) -> Message | LineError:
    """Decode one CLI line (without its newline) into its typed view, never raising.

    Returns a :data:`StdoutMessage`, an :class:`UnknownMessage`, an :class:`InvalidMessage`, or a
    :class:`LineError` for a line that is not a JSON object with a string ``type``.
    """
    # Fast paths, each only ever returning what the general path below would (anything odd falls through
    # to it), picked by one-byte checks at the places the CLI writes `"type"`: first, or right after a
    # recorder's `{"_t":<13-digit ms>,`. This runs for every line; a token delta costs well under a
    # microsecond in all, so the checks are a few byte reads, not searches.
    try:
        at = 20 if raw[2] == 0x5F else 1  # "_"
        second = raw[at + 9]  # the type's second letter, when `"type"` comes first
    except IndexError:  # too short for any of them
        at, second = 1, 0
    if second == 0x74:  # 't' of `"type":"st`: a stream event — most lines. Its own decoder checks the tag.
        try:
            return _stream_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass
    elif second == 0x79 and raw.startswith(_SYSTEM_MARK, at):  # 'y' of `"type":"sy`
        # A system line: decode straight into its subtype's view, instead of decoding the (often large)
        # line twice (as a SystemMessage, then as its subtype).
        try:
            candidate = _SYSTEM_FAST.get(_subtype_key(raw, at + _SYSTEM_MARK_LEN))
        except IndexError:
            candidate = None
        if candidate is not None:
            try:
                view = candidate[1].decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                pass
            else:
                if view.subtype == candidate[0]:  # the line's (top-level) subtype is the candidate's
                    return view  # type: ignore[no-any-return]
    elif raw[at + 1 : at + 2] != b"t":  # the first key is not "type"
        # The CLI writes a result's `type` near its end (2.1.x): the union decoder would scan the whole
        # line for its tag before decoding it. Results are the only such lines: try the result's decoder.
        try:
            return _result_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass
    try:
        msg = _decoder.decode(raw)
    except msgspec.ValidationError as strict_error:
        return _slow_path(raw, strict_error)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # msgspec raises UnicodeDecodeError (not DecodeError) for invalid UTF-8 inside a string.
        return LineError(reason="malformed", error=str(exc))
    if type(msg) is SystemMessage:
        return _specialise_system(msg, raw)
    return msg


def _slow_path(raw: bytes, strict_error: msgspec.ValidationError) -> Message | LineError:
    try:
        kind = msgspec.json.decode(raw, type=_Envelope).type
    except msgspec.ValidationError as exc:
        return LineError(reason="no_type", error=str(exc))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return LineError(reason="malformed", error=str(exc))
    if kind not in _KNOWN_TYPES:
        return UnknownMessage(type=kind, raw=raw)
    try:
        return _lenient(kind, raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return InvalidMessage(type=kind, error=str(strict_error), raw=raw)


def decode_line(line: bytes) -> Message | LineError | None:
    """Decode a framed stdout line: strips surrounding whitespace; ``None`` for a blank line.

    A line that does not start with ``{`` is ``noise`` (the SDK skips it; we keep it as an error
    entry so that no byte is dropped).
    """
    stripped = line.strip()
    if not stripped:
        return None
    if stripped[0] != 0x7B:  # "{"
        return LineError(reason="noise", error="line does not start with '{'")
    return decode_message(stripped)


# --------------------------------------------------------------------------------------------------
# stdin side
# --------------------------------------------------------------------------------------------------


class UserInputMessage(_Frozen, frozen=True, kw_only=True):
    """The ``message`` of a stdin user line."""

    role: Literal["user"] = "user"
    content: str | list[dict[str, Any]]


class UserInput(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="user"):
    """A stdin user message: one turn. The CLI ignores ``session_id`` and reports its own."""

    message: UserInputMessage
    parent_tool_use_id: None = None
    session_id: str = "default"


class StdinControlRequest(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="control_request"):
    """A control request we write to the CLI's stdin."""

    request_id: str
    request: dict[str, Any]


StdinMessage: TypeAlias = UserInput | StdinControlRequest

_stdin_encoder: Final = msgspec.json.Encoder()


def user_input(prompt: str | list[dict[str, Any]]) -> UserInput:
    """The stdin message for a turn with ``prompt`` (text, or a list of content blocks)."""
    return UserInput(message=UserInputMessage(content=prompt))


def interrupt_request(request_id: str) -> StdinControlRequest:
    """The stdin control request that interrupts the running turn."""
    return StdinControlRequest(request_id=request_id, request={"subtype": "interrupt"})


def initialize_request(request_id: str, hooks: dict[str, Any] | None = None) -> StdinControlRequest:
    """The stdin ``initialize`` control request (sent before the first user message, if at all)."""
    return StdinControlRequest(request_id=request_id, request={"subtype": "initialize", "hooks": hooks})


def encode_stdin(message: StdinMessage) -> bytes:
    """One stdin line: the message's JSON and a newline."""
    return _stdin_encoder.encode(message) + b"\n"
