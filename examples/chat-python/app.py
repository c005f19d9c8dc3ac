# chat-python: a WebSocket chat room. Clients connect to /chat-python/ROOM (/chat-python alone
# is the room `lobby`); every message is sent to everyone in the room.
#
# eddy holds the connections; the function runs only for their events (connect, each
# message, close), each an ordinary HTTP request with `eddy-websocket` saying which. A room
# is the node channel `chat.ROOM`: the connect answer joins the connection to it, and the
# function broadcasts with `POST http://eddy.local/websockets/channels/chat.ROOM/messages`,
# which the node answers itself. Nothing is kept in the instance between events, so the
# chat functions of every language on one node share their rooms.
import json
import re
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

ROUTE = "/chat-python"
ROOM = re.compile(r"[A-Za-z0-9_-]{1,64}")
MESSAGE_BYTES_MAX = 1000


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        headers = request.headers()
        event = header(headers, "eddy-websocket")
        if event is None:  # a plain HTTP request, not a WebSocket event
            usage = f"connect a WebSocket to {ROUTE}/ROOM\n".encode()
            return respond(response_out, 200, usage, [("content-type", b"text/plain")])

        # Every event comes on the path the client connected to: the room is in it.
        segments = [s for s in (request.path_with_query() or "/").split("?", 1)[0].split("/") if s]
        room = segments[1] if len(segments) > 1 else "lobby"
        if not ROOM.fullmatch(room):
            # On connect, a non-2xx answer refuses the upgrade and reaches the client as is.
            error = "room names are 1-64 characters of A-Z a-z 0-9 _ -"
            return send_json(response_out, 400, {"error": error})
        channel = f"chat.{room}"
        me = header(headers, "eddy-connection-id")

        try:
            if event == "connect":
                # Not in the channel yet, so this reaches everyone else in the room.
                broadcast(channel, {"type": "join", "id": me, "room": room})
                # The node joins the connection to the channels this header names.
                return respond(response_out, 200, headers=[("eddy-websocket-channels", channel.encode())])

            if event == "message":
                message = read_all(request.consume())
                if len(message) > MESSAGE_BYTES_MAX:
                    # A 2xx body goes back to this connection only.
                    error = f"messages are at most {MESSAGE_BYTES_MAX} bytes"
                    return send_json(response_out, 200, {"type": "error", "error": error})
                text = message.decode("utf-8", errors="replace")
                broadcast(channel, {"type": "message", "from": me, "text": text})
                # Empty: the sender gets its copy from the channel, like everyone else.
                return respond(response_out, 204)

            if event == "close":
                broadcast(channel, {"type": "leave", "id": me})
                return respond(response_out, 204)
        except RequestFailed as failure:
            return send_json(response_out, 502, {"error": f"broadcast failed: {failure}"})

        send_json(response_out, 400, {"error": f"unknown eddy-websocket event {event!r}"})


def broadcast(channel: str, event: dict) -> None:
    """Sends `event` as JSON to every connection in `channel`."""
    status, _ = fetch(
        Method_Post(),
        f"http://eddy.local/websockets/channels/{channel}/messages",
        # text: clients get a text frame (JSON), not a binary one
        [("content-type", b"application/json"), ("eddy-websocket-kind", b"text")],
        to_json(event),
    )
    if not 200 <= status < 300:
        raise RequestFailed(f"eddy answered {status}")


def header(fields: Fields, name: str) -> str | None:
    """The first value of a header, as text, or None."""
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
