// webhook-js: consumes the queue `webhooks-js` and delivers each message to a webhook
// (WEBHOOK_URL). eddy delivers one message per request as a binary-mode CloudEvent; this
// function's answer decides what happens to it: 2xx acknowledges it, anything else makes
// eddy retry with backoff and, after max_attempts, move it to `webhooks-js-dlq`. So the
// function itself never retries or sleeps: it reports the webhook's failure and lets the
// queue do the rest.
//
// Like hello-js, it exports `wasi:http/incoming-handler` directly rather than a
// service-worker `fetch` event handler, so a warm instance (`reuse = true`) can serve many
// requests.
import { getEnvironment } from "wasi:cli/environment@0.2.10";
import { handle } from "wasi:http/outgoing-handler@0.2.10";
import {
  Fields,
  IncomingBody,
  OutgoingBody,
  OutgoingRequest,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.10";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const incomingHandler = {
  handle(request, responseOut) {
    const method = request.method().tag;
    const headers = request.headers();
    const header = (name) => {
      const values = headers.get(name);
      return values.length > 0 ? decoder.decode(values[0]) : undefined;
    };
    const delivery = {
      // Only the node sets eddy-* request headers (it removes them from public requests),
      // so eddy-queue marks a real delivery: nobody else can make this function post.
      queue: header("eddy-queue"),
      id: header("ce-id"),
      attempt: header("ce-eddyattempt") ?? "1",
      contentType: header("content-type") || "application/octet-stream",
    };
    // The headers are a child of the request: release them first.
    headers[Symbol.dispose]();
    const message = method === "post" && delivery.queue && delivery.id ? readAll(request.consume()) : undefined;
    // A warm instance that keeps too many handles is replaced: release the request.
    request[Symbol.dispose]();

    if (message === undefined) {
      return respond(responseOut, 400, { error: "not a queue delivery" });
    }
    const [status, body] = deliver(delivery, message);
    respond(responseOut, status, body);
  },
};

// Posts one message to the webhook: [status, JSON answer or undefined].
function deliver({ id, attempt, contentType }, message) {
  // The environment is read on every request, not at the top of the module: componentize-js
  // runs the module's top level once while building, where the deploy's env does not exist.
  const url = Object.fromEntries(getEnvironment()).WEBHOOK_URL;
  if (!url) return [500, { error: "WEBHOOK_URL is not set" }];

  let answer;
  try {
    answer = send("POST", url, [
      ["content-type", contentType],
      // The receiver deduplicates on webhook-id: eddy delivers at least once, and a retry
      // carries the same ce-id.
      ["webhook-id", id],
      ["webhook-attempt", attempt],
      ["user-agent", "eddy-example-webhook"],
    ], message);
  } catch (err) {
    const error = `cannot reach the webhook: ${err.message}`;
    console.log(`${error} (${id}, attempt ${attempt}); eddy will retry`);
    return [502, { error }];
  }
  if (answer.status >= 200 && answer.status < 300) {
    console.log(`delivered ${id} (attempt ${attempt}): ${answer.status}`);
    return [204, undefined];
  }
  console.log(`webhook answered ${answer.status} for ${id} (attempt ${attempt}); eddy will retry`);
  return [502, { error: `webhook answered ${answer.status}` }];
}

// One outgoing request through `wasi:http/outgoing-handler`, waited for synchronously.
// StarlingMonkey's `fetch` also works from an `async handle`, but a failed fetch only says
// "TypeError: NetworkError when attempting to fetch resource"; this says which wasi:http
// error code it was (`HTTP-request-denied` for a host not in allow_outbound,
// `connection-refused`, `DNS-error ...`), and the answer reports it.
// Returns { status, body: Uint8Array }; throws an Error whose message is that code.
function send(method, url, headers, body) {
  const target = new URL(url);
  const fields = [...headers];
  if (body) fields.push(["content-length", String(body.length)]);
  const request = new OutgoingRequest(
    Fields.fromList(fields.map(([name, value]) => [name, encoder.encode(value)])),
  );
  request.setMethod({ tag: method.toLowerCase() });
  request.setScheme({ tag: target.protocol === "https:" ? "HTTPS" : "HTTP" });
  request.setAuthority(target.host);
  request.setPathWithQuery(target.pathname + target.search);
  const outgoing = request.body();

  let future;
  try {
    future = handle(request, undefined);
  } catch (err) {
    outgoing[Symbol.dispose]();
    throw new Error(errorText(err.payload ?? err));
  }
  if (body) writeAll(outgoing, body);
  OutgoingBody.finish(outgoing, undefined);

  const ready = future.subscribe();
  ready.block();
  ready[Symbol.dispose]();
  // option<result<result<incoming-response, error-code>>>: ready, then taken once.
  const result = future.get().val;
  future[Symbol.dispose]();
  if (result.tag === "err") throw new Error(errorText(result.val));

  const response = result.val;
  const status = response.status();
  const incoming = response.consume();
  const bytes = readAll(incoming);
  response[Symbol.dispose]();
  return { status, body: bytes };
}

// A wasi:http error-code as text: its case, and its details when it has any.
function errorText(code) {
  if (code?.tag === undefined) return String(code);
  if (code.val === undefined) return code.tag;
  return `${code.tag} ${JSON.stringify(code.val, (_, v) => (typeof v === "bigint" ? Number(v) : v))}`;
}

// Reads a body until its stream closes, then releases it.
function readAll(body) {
  const stream = body.stream();
  const chunks = [];
  let length = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (err) {
      if (err.payload?.tag === "closed") break; // the end of the body
      throw new Error(`reading a body failed: ${err.payload?.val?.toDebugString() ?? err}`);
    }
    chunks.push(chunk);
    length += chunk.length;
  }
  stream[Symbol.dispose]();
  IncomingBody.finish(body)[Symbol.dispose]();
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

// blocking-write-and-flush takes at most 4096 bytes at a time.
function writeAll(body, bytes) {
  const stream = body.write();
  for (let at = 0; at < bytes.length; at += 4096) {
    stream.blockingWriteAndFlush(bytes.subarray(at, at + 4096));
  }
  stream[Symbol.dispose]();
}

// Answers `value` as JSON, or an empty body when it is undefined.
function respond(responseOut, status, value) {
  const headers = value === undefined ? [] : [["content-type", encoder.encode("application/json")]];
  const response = new OutgoingResponse(Fields.fromList(headers));
  response.setStatusCode(status);
  const body = response.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: response });
  if (value !== undefined) writeAll(body, encoder.encode(JSON.stringify(value)));
  OutgoingBody.finish(body, undefined);
}
