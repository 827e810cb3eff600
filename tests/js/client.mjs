// The Vercel AI SDK's own client code, driven by Turnstile's tests (tests/adapters/ai_sdk/).
//
//   node client.mjs '<JSON job>'     → prints one JSON result on stdout
//
// A job names the `ai` major version (5, 6 or 7: the npm aliases ai5, ai6, ai7 of package.json) and what
// to do; every chunk a response carries is checked with the SDK's own parser and schema
// (`parseJsonEventStream` + `uiMessageChunkSchema`, what `DefaultChatTransport` itself runs), and any
// chunk it rejects is reported in `invalid`. Messages are assembled by `readUIMessageStream`.
//
// Jobs:
//   {"op": "send", "version": 6, "api": URL, "chatId": ID, "text": "...", "history": [UIMessage...],
//    "dropAfter": N?, "resume": bool?, "listen": bool?, "stopAfter": N?}
//       POST through DefaultChatTransport.sendMessages. With dropAfter, the connection is dropped (the
//       fetch aborted) after N chunks; with resume, the transport's reconnectToStream then picks the turn
//       up again (GET {api}/{id}/stream). With listen, a second client reconnects as soon as the first
//       chunk arrived and reads the turn to its end without interruption (`listener` in the result).
//       With stopAfter, after N chunks the page's stop button is pressed: POST {api}/{id}/stop, and the
//       stream is read on to its end.
//   {"op": "resume", "version": 6, "api": URL, "chatId": ID}
//       reconnectToStream alone: {"status": 204} or the assembled message.
//   {"op": "assemble", "version": 6, "bodies": ["data: ...\n\n...", ...]}
//       parse SSE bodies as the transport does and assemble each one's message (no server involved).

const job = JSON.parse(process.argv[2]);
const ai = await import(`ai${job.version}`);

function sseStream(text) {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(text));
      controller.close();
    },
  });
}

// A fetch that keeps every response body's text (for the schema check and the `id:` lines) while the
// transport reads the same bytes.
function tappingFetch(bodies) {
  return async (url, init) => {
    const response = await fetch(url, init);
    const record = { url: String(url), method: init?.method ?? "GET", status: response.status, text: "" };
    bodies.push(record);
    if (!response.body) return response;
    const [mine, theirs] = response.body.tee();
    record.done = (async () => {
      const reader = mine.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          record.text += value;
        }
      } catch {
        // the connection was dropped on purpose
      }
    })();
    return new Response(theirs, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

// Every `data:` event of a body through the SDK's own parser and chunk schema.
async function validate(text) {
  const invalid = [];
  const chunks = [];
  const events = ai.parseJsonEventStream({ stream: sseStream(text), schema: ai.uiMessageChunkSchema });
  const reader = events.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (value.success) chunks.push(value.value);
    else invalid.push({ raw: value.rawValue, error: String(value.error?.message ?? value.error) });
  }
  const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
  const done = /^data: \[DONE\]$/m.test(text);
  return { chunks, invalid, ids, done };
}

// Read a chunk stream into its final UIMessage, stopping (dropping the connection) after `dropAfter`.
async function assemble(stream, { dropAfter, abort, onChunk } = {}) {
  const chunks = [];
  const errors = [];
  let count = 0;
  let dropped = false;
  const counted = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        count += 1;
        chunks.push(chunk);
        onChunk?.(chunk, count);
        controller.enqueue(chunk);
        if (dropAfter != null && count >= dropAfter && !dropped) {
          dropped = true;
          abort();
        }
      },
    }),
  );
  let message;
  try {
    for await (const snapshot of ai.readUIMessageStream({
      stream: counted,
      onError: (error) => {
        if (!dropped) errors.push(String(error?.message ?? error));
      },
    })) {
      message = snapshot;
    }
  } catch (error) {
    if (!dropped) errors.push(`stream failed: ${error?.message ?? error}`);
  }
  return { message: message ? JSON.parse(JSON.stringify(message)) : null, errors, count, dropped, chunks };
}

async function send() {
  const bodies = [];
  const transport = new ai.DefaultChatTransport({ api: job.api, fetch: tappingFetch(bodies) });
  const user = { id: `u-${Date.now()}`, role: "user", parts: [{ type: "text", text: job.text }] };
  const messages = [...(job.history ?? []), user];
  const controller = new AbortController();
  const result = { user };
  let listening;
  let stopping;
  const stream = await transport.sendMessages({
    chatId: job.chatId,
    messages,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: controller.signal,
  });
  const first = await assemble(stream, {
    dropAfter: job.dropAfter,
    abort: () => controller.abort(),
    onChunk: (_chunk, n) => {
      if (job.listen && n === 1) listening = resume();
      if (job.stopAfter != null && n === job.stopAfter) {
        const stop = { method: "POST", headers: { "content-type": "application/json" }, body: "{}" };
        stopping = fetch(`${job.api}/${encodeURIComponent(job.chatId)}/stop`, stop).then(
          async (r) => ({ status: r.status, body: await r.json() }),
        );
      }
    },
  });
  result.first = first;
  if (stopping) result.stop = await stopping;
  if (job.resume) {
    const resumed = await transport.reconnectToStream({ chatId: job.chatId });
    result.resumed = resumed == null ? { status: 204 } : await assemble(resumed);
  }
  if (listening) result.listener = await listening;
  result.bodies = [];
  for (const body of bodies) {
    await body.done;
    result.bodies.push({ url: body.url, method: body.method, status: body.status, ...(await validate(body.text)) });
  }
  return result;
}

async function resume() {
  const bodies = [];
  const transport = new ai.DefaultChatTransport({ api: job.api, fetch: tappingFetch(bodies) });
  const stream = await transport.reconnectToStream({ chatId: job.chatId });
  if (stream == null) return { status: 204 };
  const out = await assemble(stream);
  await bodies[0].done;
  out.body = await validate(bodies[0].text);
  return out;
}

async function assembleSse() {
  const transport = new ai.DefaultChatTransport();
  const results = [];
  for (const body of job.bodies) {
    const out = await assemble(transport.processResponseStream(sseStream(body)));
    out.body = await validate(body);
    delete out.body.chunks; // the same as out.chunks
    results.push(out);
  }
  return { results };
}

const ops = { send, resume, assemble: assembleSse };
try {
  const result = await ops[job.op]();
  process.stdout.write(JSON.stringify({ ok: true, version: job.version, sdk: ai.VERSION ?? null, ...result }));
} catch (error) {
  process.stdout.write(JSON.stringify({ ok: false, error: String(error?.stack ?? error) }));
  process.exitCode = 1;
}
