# webhook-python: a queue consumer that delivers each message of the queue webhooks-python to
# a webhook (WEBHOOK_URL), in the style of Standard Webhooks (`webhook-id` to deduplicate).
#
# eddy delivers each message as a POST (a CloudEvent in binary mode: the message is the body,
# its attributes are `ce-*` headers). The answer decides the message's fate: 2xx
# acknowledges it, anything else makes eddy retry it with backoff and, after max_attempts,
# move it to the dead-letter queue webhooks-python-dlq. So this function only has to pass
# the webhook's verdict on.
import json
import os
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import StreamError_Closed, StreamError_LastOperationFailed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method,
    Method_Post,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
    http_error_code,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        headers = request.headers()
        message_id = header(headers, "ce-id")
        # Only the node sets eddy-* request headers (it removes them from public requests),
        # so eddy-queue marks a real delivery: nobody else can make this function post.
        queue = header(headers, "eddy-queue")
        if not isinstance(request.method(), Method_Post) or queue is None or message_id is None:
            return send_json(response_out, 400, {"error": "not a queue delivery"})
        # Read at request time, not at import: componentize-py runs the module's top level
        # when it builds the component, long before eddy passes the function its env.
        url = os.environ.get("WEBHOOK_URL", "")
        if not url:
            return send_json(response_out, 500, {"error": "WEBHOOK_URL is not set"})
        attempt = header(headers, "ce-eddyattempt") or "1"
        content_type = header(headers, "content-type") or "application/octet-stream"
        message = read_all(request.consume())

        try:
            status, _ = fetch(
                Method_Post(),
                url,
                [
                    ("content-type", content_type.encode("latin-1")),
                    # The same on every retry of this message: the receiver can drop repeats
                    # (eddy delivers at least once).
                    ("webhook-id", message_id.encode("latin-1")),
                    ("webhook-attempt", attempt.encode("latin-1")),
                    ("user-agent", b"eddy-example-webhook"),
                ],
                message,
            )
        except RequestFailed as failure:
            error = f"cannot reach the webhook: {failure}"
            # stdout lines show in `eddy logs webhook-python`, with the invocation.
            print(f"{error} ({message_id}, attempt {attempt}); eddy will retry")
            return send_json(response_out, 502, {"error": error})
        if not 200 <= status < 300:
            print(f"webhook answered {status} for {message_id} (attempt {attempt}); eddy will retry")
            return send_json(response_out, 502, {"error": f"webhook answered {status}"})
        print(f"delivered {message_id} (attempt {attempt}): {status}")
        respond(response_out, 204)


def header(fields: Fields, name: str) -> str | None:
    """The first value of a header, or None. Latin-1 maps bytes to text one to one, so
    `.encode("latin-1")` gives the original bytes back."""
    values = fields.get(name)
    return values[0].decode("latin-1") if values else None


# ---------------------------------------------------------------------------------------
# wasi:http helpers. The bindings are low level (resources, streams, pollables); these keep
# the handler readable. Synchronous: one request at a time is all this function needs.


class RequestFailed(Exception):
    """An outgoing request that got no HTTP answer; str() says why."""


def fetch(method: Method, url: str, headers: list, body: bytes | None = None) -> tuple[int, bytes]:
    """Sends a request and waits for the whole answer: (status, body).

    Raises RequestFailed when there is no answer (refused by the outbound allowlist,
    connection refused, DNS, timeout...), with the wasi:http error-code as its text.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RequestFailed(f"not an http(s) URL: {url!r}")
    try:
        request = OutgoingRequest(Fields.from_list(headers))
        request.set_method(method)
        request.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
        request.set_authority(parts.netloc)
        request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        outgoing = request.body() if body is not None else None
        # `handle` takes the request; its body is written after, while it is being sent.
        future = outgoing_handler.handle(request, None)
        if outgoing is not None:
            write_all(outgoing, body)
        with future:
            with future.subscribe() as ready:
                ready.block()
            answer = future.get()  # Some(Ok(Ok(response) | Err(error-code)))
        if isinstance(answer.value, Err):
            raise answer.value
        with answer.value.value as response:
            return response.status(), read_all(response.consume())
    except Err as err:
        raise RequestFailed(describe(err.value)) from None


def describe(error) -> str:
    """The text of a wasi:http or stream error."""
    if isinstance(error, StreamError_LastOperationFailed):
        code = http_error_code(error.value)
        return repr(code) if code is not None else error.value.to_debug_string()
    return repr(error)  # an ErrorCode, e.g. ErrorCode_ConnectionRefused()


def read_all(body: IncomingBody) -> bytes:
    """Reads a body to its end."""
    chunks = []
    with body.stream() as stream:  # a child of the body: drop it before finishing the body
        while True:
            try:
                chunks.append(stream.blocking_read(65536))
            except Err as err:
                if isinstance(err.value, StreamError_Closed):
                    break
                raise
    IncomingBody.finish(body)
    return b"".join(chunks)


def write_all(body: OutgoingBody, data: bytes) -> None:
    """Writes a whole body and finishes it."""
    with body.write() as stream:
        # blocking_write_and_flush takes at most 4096 bytes at a time.
        for at in range(0, len(data), 4096):
            stream.blocking_write_and_flush(data[at : at + 4096])
    OutgoingBody.finish(body, None)


def respond(response_out: ResponseOutparam, status: int, body=b"", headers=()) -> None:
    """Answers the incoming request."""
    response = OutgoingResponse(Fields.from_list(list(headers)))
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    write_all(outgoing, body)


def send_json(response_out: ResponseOutparam, status: int, value, headers=()) -> None:
    """Answers the incoming request with `value` as JSON."""
    headers = [("content-type", b"application/json"), *headers]
    respond(response_out, status, to_json(value), headers)


def to_json(value) -> bytes:
    """Compact UTF-8 JSON, as serde_json and JSON.stringify write it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
