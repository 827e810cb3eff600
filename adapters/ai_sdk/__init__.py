"""The Vercel AI SDK's UI message stream: any ``useChat`` front-end (``ai`` 5, 6, 7) runs on Turnstile.

``turnstile serve`` answers at ``/v1/chat`` (see ``docs/ai-sdk.md``);
:func:`turnstile.adapters.ai_sdk.routes.create_chat_app` serves the same endpoints alone, to mount in
another Starlette app. The parts (all but the last are sans-IO: no trio, no sockets, no Starlette, so
importing this package loads none of them):

* :mod:`.chunks` — the chunk types Turnstile sends
* :mod:`.mapping` — one turn's log entries → chunks
* :mod:`.messages` — chunks → ``UIMessage`` as the client builds it; a chat's history from its log
* :mod:`.requests` — what ``DefaultChatTransport`` POSTs, and the prompt in it
* :mod:`.routes` — the HTTP endpoints
"""
