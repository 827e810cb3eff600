"""Drive Turnstile's engine from your own trio program: no HTTP, just the runtime and its log."""

from __future__ import annotations

import trio

from turnstile.engine.log import CliLine, StreamEnded, view_of
from turnstile.engine.protocol import ContentBlockDelta, StreamEvent, TextDelta
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.runtime import open_runtime


async def ask(prompt: str) -> tuple[str, str]:
    """Run one turn on the built-in simulator; return its text and outcome."""
    config = RuntimeConfig(pool_size=0, default_agent=AgentConfig(agent="sim", extra_args=("--speed", "0")))
    text: list[str] = []
    outcome = "?"
    async with open_runtime(config) as runtime:
        session = await runtime.create_session()
        stream = await runtime.start_turn(session.id, prompt)
        # Catch-up from the log, then live; the iteration ends after the stream's terminal entry.
        async with runtime.subscribe(session.id, stream=stream) as subscription:
            async for batch in subscription:
                for record in batch:
                    entry = record.entry
                    if isinstance(entry, CliLine) and entry.type == "stream_event":
                        view = view_of(entry)  # typed, decoded on demand from the CLI's bytes
                        if isinstance(view, StreamEvent) and isinstance(view.event, ContentBlockDelta):
                            if isinstance(view.event.delta, TextDelta):
                                text.append(view.event.delta.text)
                    elif isinstance(entry, StreamEnded):
                        outcome = entry.outcome
    return "".join(text), outcome


if __name__ == "__main__":
    answer, how = trio.run(ask, '[[sim say="Hello from the engine"]]')
    print(f"{how}: {answer}")
