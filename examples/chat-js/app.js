// chat-js: a WebSocket chat room. eddy holds the connections; this function runs once per
// event on one of them (connect, message, close) and keeps no state of its own. The room is
// a node channel, `chat.ROOM`: on connect the function asks the node to join the
// connection to it, and every message is broadcast to it through `http://eddy.local`. The
// chat functions in the other languages use the same channels, so they share rooms.
//
// Like hello-js, it exports `wasi:http/incoming-handler` directly rather than a
// service-worker `fetch` event handler, so a warm instance (`reuse = true`) can serve many
// requests.
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
const decoder = new TextDecoder(); // replaces invalid UTF-8 with U+FFFD
const ROOM = /^[A-Za-z0-9_-]{1,64}$/;
const MESSAGE_BYTES_MAX = 1000;

export const incomingHandler = {
  handle(request, responseOut) {
    const headers = request.headers();
    const header = (name) => {
      const values = headers.get(name);
      return values.length > 0 ? decoder.decode(values[0]) : undefined;
    };
    const event = header("eddy-websocket");
    const id = header("eddy-connection-id");
    // The headers are a child of the request: release them first.
    headers[Symbol.dispose]();
    const path = request.pathWithQuery() ?? "/";
    const message = event === "message" ? readAll(request.consume()) : undefined;
    // A warm instance that keeps too many handles is replaced: release the request.
    request[Symbol.dispose]();

    const [status, body, extra = []] = answer(event, id, path, message);
    const json = typeof body === "object";
    const headerList = [...extra];
    if (json) headerList.push(["content-type", "application/json"]);
    if (typeof body === "string") headerList.push(["content-type", "text/plain"]);
    respond(responseOut, status, json ? JSON.stringify(body) : body, headerList);
  },
};

// The answer to one event: [status, JSON value or text or undefined, extra headers].
function answer(event, id, path, message) {
  if (event === undefined) return [200, "connect a WebSocket to /chat-js/ROOM\n"];
  // `/chat-js` alone is the lobby; `/chat-js/ROOM` is ROOM.
  const room = path.split("?")[0].split("/").filter((s) => s !== "")[1] ?? "lobby";
  if (!ROOM.test(room)) {
    // On connect this refuses the upgrade, with this answer.
    return [400, { error: "room names are 1-64 characters of A-Z a-z 0-9 _ -" }];
  }
  const channel = `chat.${room}`;
  try {
    switch (event) {
      case "connect":
        // The new connection is not in the channel yet, so only the others see this.
        broadcast(channel, { type: "join", id, room });
        // The node joins the connection to the channel when it accepts the upgrade.
        return [200, undefined, [["eddy-websocket-channels", channel]]];
      case "message":
        if (message.length > MESSAGE_BYTES_MAX) {
          // A 2xx body goes back to this connection only.
          return [200, { type: "error", error: `messages are at most ${MESSAGE_BYTES_MAX} bytes` }];
        }
        // The sender is in the channel too: it gets its copy from there, not from the answer.
        broadcast(channel, { type: "message", from: id, text: decoder.decode(message) });
        return [204];
      case "close":
        broadcast(channel, { type: "leave", id });
        return [204];
      default:
        return [400, { error: `unknown eddy-websocket event: ${event}` }];
    }
  } catch (err) {
    return [502, { error: `broadcast failed: ${err.message}` }];
  }
}

// Sends `value` as a text frame to every connection in `channel`: the node answers
// `{"sent": N}`. Throws when the request fails or the node answers non-2xx.
function broadcast(channel, value) {
  const answer = send(
    "POST",
    `http://eddy.local/websockets/channels/${channel}/messages`,
    [
      ["content-type", "application/json"],
      ["eddy-websocket-kind", "text"],
    ],
    encoder.encode(JSON.stringify(value)),
  );
  if (answer.status < 200 || answer.status > 299) {
    throw new Error(`eddy.local answered ${answer.status}: ${decoder.decode(answer.body)}`);
  }
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

function respond(responseOut, status, text, headers) {
  const response = new OutgoingResponse(
    Fields.fromList(headers.map(([name, value]) => [name, encoder.encode(value)])),
  );
  response.setStatusCode(status);
  const body = response.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: response });
  if (text) writeAll(body, encoder.encode(text));
  OutgoingBody.finish(body, undefined);
}
