"""turnstile.engine.protocol: typed views of the CLI's stdout, re-expressing the official SDK's parser cases.

Peer cases are numbered as in ../shared/protocol.md ("Peer test cases"). Where Turnstile deliberately
differs from the SDK the test says so (we keep what the SDK drops, and never raise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from turnstile.engine.protocol import (
    AdvisorToolResultBlock,
    ApiRetry,
    AssistantMessage,
    CompactBoundary,
    ContentBlockDelta,
    ContentBlockStart,
    ControlCancelRequest,
    ControlRequest,
    ControlResponse,
    ConversationReset,
    HookEvent,
    InputJsonDelta,
    InvalidMessage,
    KeepAlive,
    LazyJson,
    LineError,
    MessageDelta,
    MessageStop,
    RateLimitEvent,
    ResultMessage,
    ServerToolUseBlock,
    SignatureDelta,
    StreamEvent,
    SystemInit,
    SystemMessage,
    TaskNotification,
    TaskProgress,
    TaskStarted,
    TaskUpdated,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolResultBlock,
    ToolUseBlock,
    UnknownBlock,
    UnknownMessage,
    UnknownStreamEvent,
    UserMessage,
    decode_line,
    decode_message,
    encode_stdin,
    initialize_request,
    interrupt_request,
    user_input,
)


def dec(obj: Any) -> Any:
    """Decode a Python object as the CLI would have written it."""
    return decode_message(json.dumps(obj).encode())


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "user", "message": {"role": "user", "content": content}, **extra}


def assistant(content: Any, model: str = "claude-sonnet-5", **extra: Any) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {"role": "assistant", "model": model, "content": content},
        **extra,
    }


MINIMAL_RESULT: dict[str, Any] = {
    "type": "result",
    "subtype": "success",
    "duration_ms": 1000,
    "duration_api_ms": 500,
    "is_error": False,
    "num_turns": 1,
    "session_id": "s1",
}

# --- user messages (peer cases 1-8) -------------------------------------------------------------------


def test_1_user_text_block() -> None:
    m = dec(user([{"type": "text", "text": "Hello"}]))
    assert isinstance(m, UserMessage)
    assert m.message.content == [TextBlock(text="Hello")]
    assert m.text == "Hello"


def test_2_user_uuid_preserved() -> None:
    assert dec(user([{"type": "text", "text": "Hi"}], uuid="u-1")).uuid == "u-1"


@pytest.mark.parametrize("content", ["plain", [{"type": "text", "text": "x"}]])
def test_3_origin_passed_through(content: Any) -> None:
    origin = {"kind": "peer", "extra": 1}
    m = dec(user(content, origin=origin))
    assert m.origin == origin and m.origin_kind == "peer"


@pytest.mark.parametrize("origin", [None, "human", {}, {"kind": 3}])
def test_3_origin_kind_none_unless_object_with_string_kind(origin: Any) -> None:
    # The SDK maps these to origin None. We keep the raw value (lossless) and expose origin_kind None.
    m = dec(user("x", origin=origin))
    assert isinstance(m, UserMessage)
    assert m.origin_kind is None


def test_4_text_and_tool_use() -> None:
    m = dec(
        user(
            [
                {"type": "text", "text": "a"},
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"c": 1}},
            ]
        )
    )
    assert m.message.content[1] == ToolUseBlock(id="t1", name="Bash", input={"c": 1})


@pytest.mark.parametrize("is_error", [None, True])
def test_5_tool_result_string(is_error: bool | None) -> None:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": "t1", "content": "out"}
    if is_error is not None:
        block["is_error"] = is_error
    m = dec(user([block]))
    assert m.message.content == [ToolResultBlock(tool_use_id="t1", content="out", is_error=is_error)]


def test_6_mixed_blocks_in_order() -> None:
    m = dec(
        user(
            [
                {"type": "text", "text": "1"},
                {"type": "tool_use", "id": "a", "name": "Read", "input": {}},
                {"type": "tool_result", "tool_use_id": "a", "content": [{"type": "text", "text": "r"}]},
                {"type": "text", "text": "4"},
            ]
        )
    )
    kinds = [type(b).__name__ for b in m.message.content]
    assert kinds == ["TextBlock", "ToolUseBlock", "ToolResultBlock", "TextBlock"]


def test_7_parent_tool_use_id() -> None:
    assert dec(user("x", parent_tool_use_id="toolu_1")).parent_tool_use_id == "toolu_1"


def test_8_tool_use_result_kept_verbatim() -> None:
    meta = {
        "filePath": "/a",
        "oldString": "x",
        "newString": "y",
        "structuredPatch": [{"lines": ["-x", "+y"]}],
    }
    m = dec(user("edited", tool_use_result=meta))
    assert m.tool_use_result == meta
    assert m.message.content == "edited"


# --- assistant messages (9-16) ------------------------------------------------------------------------


def test_9_text_and_tool_use() -> None:
    m = dec(
        assistant(
            [{"type": "text", "text": "t"}, {"type": "tool_use", "id": "x", "name": "Bash", "input": {}}]
        )
    )
    assert isinstance(m, AssistantMessage) and len(m.message.content) == 2
    assert m.message.model == "claude-sonnet-5"


def test_10_thinking_with_signature() -> None:
    m = dec(
        assistant(
            [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "text", "text": "a"}]
        )
    )
    assert m.message.content[0] == ThinkingBlock(thinking="hmm", signature="sig")


def test_11_server_tool_use_kept() -> None:
    m = dec(assistant([{"type": "server_tool_use", "id": "s", "name": "advisor", "input": {}}]))
    assert m.message.content == [ServerToolUseBlock(id="s", name="advisor", input={})]


@pytest.mark.parametrize(
    "content",
    [
        {"type": "advisor_result", "text": "do x"},
        {"type": "advisor_redacted_result", "encrypted_content": "abc"},
    ],
)
def test_12_advisor_tool_result_dict_content(content: dict[str, Any]) -> None:
    m = dec(assistant([{"type": "advisor_tool_result", "tool_use_id": "s", "content": content}]))
    assert m.message.content == [AdvisorToolResultBlock(tool_use_id="s", content=content)]


def test_13_usage_kept_or_none() -> None:
    usage = {"input_tokens": 3, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 2}
    obj = assistant([{"type": "text", "text": "x"}])
    assert dec(obj).message.usage is None
    obj["message"]["usage"] = usage
    assert dec(obj).message.usage == usage


def test_14_parent_tool_use_id() -> None:
    assert dec(assistant([], parent_tool_use_id="p")).parent_tool_use_id == "p"


@pytest.mark.parametrize("error", ["authentication_failed", "unknown", "rate_limit"])
def test_15_synthetic_error_message(error: str) -> None:
    m = dec(assistant([{"type": "text", "text": "Not logged in"}], model="<synthetic>", error=error))
    assert m.error == error and m.message.model == "<synthetic>"
    assert m.message.content == [TextBlock(text="Not logged in")]
    assert dec(assistant([])).error is None


def test_16_ids_exposed_or_none() -> None:
    obj = assistant([], session_id="s", uuid="u")
    obj["message"].update(id="msg_1", stop_reason="end_turn")
    m = dec(obj)
    assert (m.message.id, m.message.stop_reason, m.session_id, m.uuid) == ("msg_1", "end_turn", "s", "u")
    bare = dec(assistant([]))
    assert (bare.message.id, bare.message.stop_reason, bare.session_id, bare.uuid) == (None, None, None, None)


def test_unknown_block_kept_not_dropped() -> None:
    # The SDK silently drops unknown content blocks; we keep them whole.
    raw_block = {"type": "web_search_tool_result", "tool_use_id": "s", "content": [{"url": "u"}]}
    m = dec(assistant([{"type": "text", "text": "a"}, raw_block]))
    assert isinstance(m, AssistantMessage)
    block = m.message.content[1]
    assert isinstance(block, UnknownBlock) and block.kind == "web_search_tool_result"
    assert json.loads(block.raw) == raw_block


# --- system messages (17-24) --------------------------------------------------------------------------


def test_17_generic_subtype() -> None:
    m = dec({"type": "system", "subtype": "start", "session_id": "s"})
    assert type(m) is SystemMessage and m.subtype == "start"


def test_18_task_started_full_and_minimal() -> None:
    full = dec(
        {
            "type": "system",
            "subtype": "task_started",
            "task_id": "t",
            "description": "d",
            "task_type": "local_bash",
            "tool_use_id": "tu",
        }
    )
    assert isinstance(full, TaskStarted) and (full.task_type, full.tool_use_id) == ("local_bash", "tu")
    minimal = dec({"type": "system", "subtype": "task_started", "task_id": "t", "description": "d"})
    assert isinstance(minimal, TaskStarted) and minimal.task_type is None and minimal.tool_use_id is None


def test_19_task_progress() -> None:
    m = dec(
        {
            "type": "system",
            "subtype": "task_progress",
            "task_id": "t",
            "usage": {"total_tokens": 5, "tool_uses": 1, "duration_ms": 9},
            "last_tool_name": "Bash",
        }
    )
    assert (
        isinstance(m, TaskProgress)
        and m.last_tool_name == "Bash"
        and m.usage
        == {
            "total_tokens": 5,
            "tool_uses": 1,
            "duration_ms": 9,
        }
    )


def test_20_task_notification() -> None:
    m = dec({"type": "system", "subtype": "task_notification", "task_id": "t", "status": "failed"})
    assert isinstance(m, TaskNotification) and m.status == "failed" and m.usage is None


@pytest.mark.parametrize(
    ("patch", "status"),
    [
        ({"status": "completed", "end_time": 5}, "completed"),
        ({"status": "running"}, "running"),
        ({"status": "paused"}, "paused"),
        ({"status": "killed"}, "killed"),
        ({"end_time": 5}, None),
        ("nonsense", None),
        ([1, 2], None),
        (3, None),
        (None, None),
    ],
)
def test_21_task_updated_never_raises(patch: Any, status: str | None) -> None:
    m = dec({"type": "system", "subtype": "task_updated", "task_id": "t", "patch": patch})
    assert isinstance(m, TaskUpdated) and m.status == status


def test_21_task_updated_without_patch_or_ids() -> None:
    m = dec({"type": "system", "subtype": "task_updated"})
    assert isinstance(m, TaskUpdated) and m.status is None and m.session_id is None and m.uuid is None


def test_22_typed_system_messages_are_system_messages() -> None:
    m = dec({"type": "system", "subtype": "task_started", "task_id": "t"})
    assert isinstance(m, SystemMessage) and m.subtype == "task_started"


def test_23_unknown_subtype_is_exactly_generic() -> None:
    m = dec({"type": "system", "subtype": "some_future_subtype", "x": 1})
    assert type(m) is SystemMessage and m.subtype == "some_future_subtype"


@pytest.mark.parametrize(
    ("obj", "name"),
    [
        ({"hook_event": "PreToolUse", "hook_name": "n"}, "PreToolUse"),
        ({"hook_name": "only-name"}, "only-name"),
        ({"hook_event_name": "Stop"}, "Stop"),
    ],
)
def test_24_hook_events(obj: dict[str, Any], name: str) -> None:
    m = dec({"type": "system", "subtype": "hook_started", **obj})
    assert isinstance(m, HookEvent) and m.name == name
    r = dec(
        {
            "type": "system",
            "subtype": "hook_response",
            "output": "o",
            "exit_code": 0,
            "outcome": "success",
            **obj,
        }
    )
    assert isinstance(r, HookEvent) and (r.output, r.exit_code, r.outcome) == ("o", 0, "success")


def test_known_system_views() -> None:
    init = dec(
        {
            "type": "system",
            "subtype": "init",
            "session_id": "s",
            "permissionMode": "default",
            "tools": ["Bash"],
        }
    )
    assert isinstance(init, SystemInit) and init.permission_mode == "default" and init.tools == ["Bash"]
    retry = dec({"type": "system", "subtype": "api_retry", "attempt": 2, "error_status": 529})
    assert isinstance(retry, ApiRetry) and retry.attempt == 2 and retry.error_status == 529
    cb = dec({"type": "system", "subtype": "compact_boundary", "compact_metadata": {"trigger": "manual"}})
    assert isinstance(cb, CompactBoundary) and cb.compact_metadata["trigger"] == "manual"


# --- result messages (25-34) --------------------------------------------------------------------------


def test_25_minimal_success() -> None:
    m = dec(MINIMAL_RESULT)
    assert isinstance(m, ResultMessage) and m.subtype == "success" and not m.is_error
    none_fields = (
        m.stop_reason,
        m.terminal_reason,
        m.origin,
        m.model_usage,
        m.permission_denials,
        m.deferred_tool_use,
        m.errors,
        m.api_error_status,
        m.uuid,
        m.result,
    )
    assert none_fields == (None,) * 10


def test_26_to_34_result_variants() -> None:
    assert dec({**MINIMAL_RESULT, "stop_reason": "end_turn", "result": "Done"}).result == "Done"
    assert dec({**MINIMAL_RESULT, "subtype": "error_max_turns", "stop_reason": None}).stop_reason is None
    assert dec({**MINIMAL_RESULT, "terminal_reason": "aborted_tools"}).terminal_reason == "aborted_tools"
    for origin in (
        {"kind": "human"},
        {"kind": "task-notification", "subkind": "x"},
        {"kind": "unclassified"},
    ):
        assert dec({**MINIMAL_RESULT, "origin": origin}).origin == origin
    mu = {"claude-sonnet-5": {"inputTokens": 1, "outputTokens": 2, "costUSD": 0.1}}
    m30 = dec({**MINIMAL_RESULT, "modelUsage": mu, "permission_denials": [], "uuid": "u"})
    assert (m30.model_usage, m30.permission_denials, m30.uuid) == (mu, [], "u")
    dtu = {"id": "t", "name": "Bash", "input": {"command": "ls"}}
    assert dec({**MINIMAL_RESULT, "deferred_tool_use": dtu}).deferred_tool_use == dtu
    errs = dec(
        {**MINIMAL_RESULT, "subtype": "error_during_execution", "is_error": True, "errors": ["a", "b"]}
    )
    assert errs.errors == ["a", "b"] and errs.is_error
    api = dec({**MINIMAL_RESULT, "is_error": True, "api_error_status": 529, "result": "overloaded"})
    assert api.api_error_status == 529 and api.subtype == "success" and api.is_error
    assert dec({**MINIMAL_RESULT, "result": "fine"}).errors is None


def test_result_key_order_does_not_matter() -> None:
    # 2.1.220+ shuffles result keys; `type` in the middle must still decode.
    shuffled = b'{"is_error":false,"duration_api_ms":5,"type":"result","num_turns":1,"subtype":"success",'
    shuffled += b'"session_id":"s","duration_ms":9}'
    assert isinstance(decode_message(shuffled), ResultMessage)


# --- other types (35-37) ------------------------------------------------------------------------------


def test_35_rate_limit_event() -> None:
    m = dec(
        {
            "type": "rate_limit_event",
            "rate_limit_info": {
                "status": "allowed_warning",
                "resetsAt": 1700000000,
                "rateLimitType": "five_hour",
                "utilization": 0.9,
            },
        }
    )
    assert isinstance(m, RateLimitEvent) and m.rate_limit_info.status == "allowed_warning"
    assert m.rate_limit_info.rate_limit_type == "five_hour" and m.rate_limit_info.utilization == 0.9
    rejected = dec(
        {
            "type": "rate_limit_event",
            "rate_limit_info": {"status": "rejected", "overageStatus": "rejected", "isUsingOverage": False},
        }
    )
    assert rejected.rate_limit_info.overage_status == "rejected"
    assert (
        dec({"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}}).rate_limit_info.status
        == "allowed"
    )


def test_36_conversation_reset() -> None:
    m = dec({"type": "conversation_reset", "new_conversation_id": "c2", "session_id": "s"})
    assert isinstance(m, ConversationReset) and m.new_conversation_id == "c2"
    bad = dec({"type": "conversation_reset", "session_id": "s"})
    assert isinstance(bad, InvalidMessage) and "new_conversation_id" in bad.error


def test_37_unknown_type_kept() -> None:
    # The SDK returns None and drops the message; we keep it typed as unknown, raw bytes intact.
    raw = b'{"type":"active_goal","value":"ship","uuid":"u"}'
    m = decode_message(raw)
    assert isinstance(m, UnknownMessage) and m.type == "active_goal" and m.raw == raw


def test_keep_alive_and_control_messages() -> None:
    assert isinstance(dec({"type": "keep_alive"}), KeepAlive)
    req = dec(
        {
            "type": "control_request",
            "request_id": "r1",
            "request": {"subtype": "can_use_tool", "tool_name": "B"},
        }
    )
    assert isinstance(req, ControlRequest) and req.subtype == "can_use_tool"
    ok = dec(
        {
            "type": "control_response",
            "response": {"subtype": "success", "request_id": "r1", "response": {"still_queued": []}},
        }
    )
    assert isinstance(ok, ControlResponse) and ok.response.response == {"still_queued": []}
    bare = dec({"type": "control_response", "response": {"subtype": "success", "request_id": "r1"}})
    assert bare.response.response is None  # 2.1.29 replied with no payload
    err = dec(
        {"type": "control_response", "response": {"subtype": "error", "request_id": "r1", "error": "no"}}
    )
    assert err.response.error == "no"
    assert isinstance(dec({"type": "control_cancel_request", "request_id": "r1"}), ControlCancelRequest)


# --- malformed (38-42) ---------------------------------------------------------------------------------


def test_38_non_object_is_a_line_error() -> None:
    m = decode_message(b'"just a string"')
    assert isinstance(m, LineError) and m.reason == "no_type"


def test_39_missing_type() -> None:
    m = decode_message(b'{"message": {}}')
    assert isinstance(m, LineError) and m.reason == "no_type"


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        ({"type": "user"}, "user"),
        ({"type": "assistant"}, "assistant"),
        ({"type": "result", "subtype": "success"}, "result"),
        ({"type": "system"}, "system"),
    ],
)
def test_40_missing_required_field(obj: dict[str, Any], kind: str) -> None:
    # The SDK raises MessageParseError; we return a typed InvalidMessage carrying the raw line.
    m = dec(obj)
    assert isinstance(m, InvalidMessage) and m.type == kind and "required" in m.error.lower()
    assert json.loads(m.raw) == obj


def test_41_assistant_string_content_is_invalid() -> None:
    m = dec(assistant("not a list"))
    assert isinstance(m, InvalidMessage) and m.type == "assistant"


@pytest.mark.parametrize("kind", ["user", "assistant"])
def test_42_non_dict_block_is_invalid(kind: str) -> None:
    obj = user(["bare string"]) if kind == "user" else assistant(["bare string"])
    m = dec(obj)
    assert isinstance(m, InvalidMessage) and m.type == kind


# --- framing-level decoding (50, 52) and never-raise ---------------------------------------------------


@pytest.mark.parametrize("line", [b"[SandboxDebug] starting", b"plain trailer", b"  Error: x"])
def test_50_noise_lines_are_line_errors(line: bytes) -> None:
    m = decode_line(line)
    assert isinstance(m, LineError) and m.reason == "noise"


def test_52_broken_json_is_malformed() -> None:
    m = decode_line(b'{"type": "assistant", "message": ')
    assert isinstance(m, LineError) and m.reason == "malformed"


def test_blank_line_is_nothing() -> None:
    assert decode_line(b"  \r") is None


def test_crlf_tolerated() -> None:
    assert isinstance(decode_line(b'{"type":"keep_alive"}\r'), KeepAlive)


def test_non_utf8_is_malformed() -> None:
    m = decode_line(b'{"type":"system","subtype":"\xff\xfe"}')
    assert isinstance(m, LineError) and m.reason == "malformed"


# --- stream events ---------------------------------------------------------------------------------------


def se(event: dict[str, Any]) -> Any:
    return dec({"type": "stream_event", "event": event, "session_id": "s", "uuid": "u"})


def test_stream_event_payloads() -> None:
    start = se(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "Bash", "input": {}},
        }
    )
    assert isinstance(start, StreamEvent) and isinstance(start.event, ContentBlockStart)
    assert isinstance(start.event.content_block, ToolUseBlock)
    deltas = {
        "text_delta": ({"text": "hi"}, TextDelta),
        "input_json_delta": ({"partial_json": ""}, InputJsonDelta),
        "thinking_delta": ({"thinking": "h", "estimated_tokens": 3}, ThinkingDelta),
        "signature_delta": ({"signature": "s"}, SignatureDelta),
    }
    for name, (fields, cls) in deltas.items():
        ev = se({"type": "content_block_delta", "index": 0, "delta": {"type": name, **fields}}).event
        assert isinstance(ev, ContentBlockDelta) and isinstance(ev.delta, cls)
    md = se(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 3},
        }
    )
    assert isinstance(md.event, MessageDelta) and md.event.stop_reason == "tool_use"
    assert isinstance(se({"type": "message_stop"}).event, MessageStop)


def test_unknown_stream_event_and_delta_kept() -> None:
    ev = se({"type": "future_event", "x": 1}).event
    assert isinstance(ev, UnknownStreamEvent) and ev.kind == "future_event"
    d = se(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {}}}
    ).event
    assert isinstance(d, ContentBlockDelta) and d.delta.kind == "citations_delta"  # type: ignore[union-attr]


# --- stdin side (55) -----------------------------------------------------------------------------------


def test_55_interrupt_request_shape() -> None:
    line = encode_stdin(interrupt_request("req_1_abc"))
    assert line.endswith(b"\n")
    assert json.loads(line) == {
        "type": "control_request",
        "request_id": "req_1_abc",
        "request": {"subtype": "interrupt"},
    }


def test_user_input_shape() -> None:
    obj = json.loads(encode_stdin(user_input("hello")))
    assert obj == {
        "type": "user",
        "message": {"role": "user", "content": "hello"},
        "parent_tool_use_id": None,
        "session_id": "default",
    }
    init = json.loads(encode_stdin(initialize_request("req_0")))
    assert init["request"]["subtype"] == "initialize"


def test_views_are_frozen() -> None:
    m = dec(MINIMAL_RESULT)
    with pytest.raises(AttributeError):
        m.subtype = "x"
    assert msgspec.structs.asdict(m)["subtype"] == "success"


# --- lazy fields: kept as raw JSON by the decode, decoded when read ------------------------------------

# Our recordings of every CLI version in the compatibility matrix (docs/compatibility.md), 2.1.74 to 2.1.332.
FIXTURE_DIRS = sorted((Path(__file__).resolve().parents[1] / "fixtures").glob("cli-*"))


def real_lines(kind: str, subtype: str | None = None) -> list[tuple[bytes, dict[str, Any]]]:
    """Every line of the recorded real-CLI fixtures of ``kind`` (and ``subtype``), with its JSON as dicts."""
    out = []
    for path in sorted(p for d in FIXTURE_DIRS for p in d.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            obj = json.loads(line)
            if obj.get("type") == kind and (subtype is None or obj.get("subtype") == subtype):
                out.append((line, obj))
    assert out, f"no {kind}/{subtype} line in {FIXTURE_DIRS}"
    return out


LAZY_INIT = ("tools", "mcp_servers", "slash_commands", "agents", "skills", "plugins", "capabilities")


def test_lazy_init_lists_read_as_the_cli_wrote_them() -> None:
    for line, obj in real_lines("system", "init"):
        view = decode_message(line)
        assert isinstance(view, SystemInit)
        for name in LAZY_INIT:
            assert getattr(view, name) == obj.get(name, []), name
            # the raw field is the CLI's bytes for that value, not a copy of the line
            assert json.loads(bytes(getattr(view, f"{name}_json"))) == obj.get(name, [])
        assert view.tools and all(isinstance(t, str) for t in view.tools)


def test_lazy_fields_of_assistant_result_and_user_lines() -> None:
    for line, obj in real_lines("assistant"):
        view = decode_message(line)
        assert isinstance(view, AssistantMessage) and view.message.usage == obj["message"].get("usage")
    for line, obj in real_lines("result"):
        view = decode_message(line)
        assert isinstance(view, ResultMessage)
        assert view.model_usage == obj.get("modelUsage")
        assert view.permission_denials == obj.get("permission_denials")
        assert view.usage == obj.get("usage")  # eager: the fold reads it at every result
    for line, obj in real_lines("user"):
        view = decode_message(line)
        assert isinstance(view, UserMessage) and view.tool_use_result == obj.get("tool_use_result")


def test_lazy_field_of_another_shape_reads_as_its_default_and_keeps_its_json() -> None:
    init = dec({"type": "system", "subtype": "init", "session_id": "s", "tools": None, "skills": {"a": 1}})
    # Still the init view (an eager list[str] made the whole line a generic SystemMessage).
    assert isinstance(init, SystemInit) and init.session_id == "s"
    assert init.tools == [] and bytes(init.tools_json) == b"null"
    assert init.skills == [] and json.loads(bytes(init.skills_json)) == {"a": 1}
    fresh = init.tools
    fresh.append("x")
    assert init.tools == []  # every read is a fresh value: a default is never shared
    missing = dec({"type": "system", "subtype": "init"})
    assert isinstance(missing, SystemInit) and missing.plugins == [] and missing.capabilities == []
    odd = decode_message(b'{"type":"system","subtype":"init","agents":[1,,2],"tools":["\xff"]}')
    assert isinstance(odd, LineError)  # the decode still checks the skipped value is JSON
    odd = decode_message(b'{"type":"system","subtype":"init","agents":7,"tools":["\xff"]}')
    assert isinstance(odd, SystemInit) and odd.agents == [] and odd.tools == []  # reading never raises
    r = dec({**MINIMAL_RESULT, "modelUsage": [1, 2]})
    assert isinstance(r, ResultMessage) and r.model_usage is None and r.permission_denials is None


def test_lazy_fields_encode_back_to_the_same_json() -> None:
    for line, obj in real_lines("system", "init"):
        view = decode_message(line)
        again = json.loads(msgspec.json.encode(view))
        for name in LAZY_INIT:
            assert again[name] == obj.get(name, [])
        assert "tools_json" not in again


def test_lazy_json_on_the_class_is_the_descriptor() -> None:
    assert isinstance(SystemInit.tools, LazyJson) and SystemInit.tools.name == "tools"
    assert "tools" not in SystemInit.__struct_fields__ and "tools_json" in SystemInit.__struct_fields__
