// repo-api-js: `GET /repo-api-js/OWNER/REPO` asks GitHub about a repository and answers a
// small JSON summary of it. It shows an eddy function calling an outbound service: eddy
// lets it reach only the hosts in `allow_outbound` (eddy.toml), and the address and token
// come from the function's environment.
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
const USAGE = "expected GET /repo-api-js/OWNER/REPO";
// GitHub's own limit on owner and repository names is shorter; this keeps the path sane.
const NAME = /^[A-Za-z0-9._-]{1,100}$/;

export const incomingHandler = {
  handle(request, responseOut) {
    const method = request.method().tag;
    const path = request.pathWithQuery() ?? "/";
    // Release the request before answering: a warm instance that keeps too many handles
    // is replaced. Everything needed from it is read above.
    request[Symbol.dispose]();
    const [status, body, headers] = answer(method, path);
    respond(responseOut, status, JSON.stringify(body), [
      ["content-type", "application/json"],
      ...headers,
    ]);
  },
};

// The answer to one request: [status, JSON value, extra headers].
function answer(method, path) {
  if (method !== "get") return [405, { error: "only GET" }, [["allow", "GET"]]];
  const segments = path.split("?")[0].split("/").filter((s) => s !== "");
  if (segments.length !== 3 || !NAME.test(segments[1]) || !NAME.test(segments[2])) {
    return [400, { error: USAGE }, []];
  }
  const [, owner, repo] = segments;

  // The environment is read on every request, not at the top of the module: componentize-js
  // runs the module's top level once while building, where the deploy's env does not exist.
  const env = Object.fromEntries(getEnvironment());
  const api = (env.GITHUB_API || "https://api.github.com").replace(/\/+$/, "");
  const headers = [
    ["accept", "application/vnd.github+json"],
    ["user-agent", "eddy-example-repo-api"],
  ];
  if (env.GITHUB_TOKEN) headers.push(["authorization", `Bearer ${env.GITHUB_TOKEN}`]);

  let upstream;
  try {
    upstream = send("GET", `${api}/repos/${owner}/${repo}`, headers);
  } catch (err) {
    return [502, { error: `cannot reach GitHub: ${err.message}` }, []];
  }
  if (upstream.status === 404) {
    return [404, { error: `no such repository: ${owner}/${repo}` }, []];
  }
  if (upstream.status !== 200) {
    return [502, { error: `GitHub answered ${upstream.status}` }, []];
  }
  let data;
  try {
    data = JSON.parse(decoder.decode(upstream.body));
  } catch {
    data = undefined;
  }
  if (typeof data?.full_name !== "string") {
    return [502, { error: "GitHub's answer was not a repository" }, []];
  }
  return [
    200,
    {
      repo: data.full_name,
      description: data.description ?? null,
      stars: data.stargazers_count ?? null,
      forks: data.forks_count ?? null,
      open_issues: data.open_issues_count ?? null,
      language: data.language ?? null,
      url: data.html_url ?? null,
    },
    [],
  ];
}

// One outgoing request through `wasi:http/outgoing-handler`, waited for synchronously.
// StarlingMonkey's `fetch` also works from an `async handle`, but a failed fetch only says
// "TypeError: NetworkError when attempting to fetch resource"; this says which wasi:http
// error code it was (`HTTP-request-denied` for a host not in allow_outbound,
// `connection-refused`, `DNS-error ...`), and the answer reports it.
// Returns { status, body: Uint8Array }; throws an Error whose message is that code.
function send(method, url, headers, body) {
  const target = new URL(url);
  const request = new OutgoingRequest(
    Fields.fromList(headers.map(([name, value]) => [name, encoder.encode(value)])),
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
  writeAll(body, encoder.encode(text));
  OutgoingBody.finish(body, undefined);
}
