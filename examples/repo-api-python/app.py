# repo-api-python: `GET /repo-api-python/OWNER/REPO` answers a short JSON summary of a GitHub
# repository, fetched from GitHub's REST API.
#
# A componentize-py `wasi:http/proxy` app: eddy calls `handle` once per request. Outgoing
# requests go through `wasi:http/outgoing-handler`, and eddy lets them out only to the hosts
# in the function's `allow_outbound` (eddy.toml); anything else fails with
# HTTP-request-denied.
import json
import os
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
    Method_Get,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
    http_error_code,
)

ROUTE = "/repo-api-python"
# The characters GitHub allows in owner and repository names; it also keeps `/`, `?`, `%`
# and the like out of the URL built from them.
NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        if not isinstance(request.method(), Method_Get):
            return send_json(response_out, 405, {"error": "only GET"}, [("allow", b"GET")])

        path = (request.path_with_query() or "/").split("?", 1)[0]
        segments = [s for s in path.split("/") if s]
        if len(segments) != 3 or not all(NAME.fullmatch(s) for s in segments[1:]):
            return send_json(response_out, 400, {"error": f"expected GET {ROUTE}/OWNER/REPO"})
        owner, repo = segments[1], segments[2]

        # Read at request time, not at import: componentize-py runs the module's top level
        # when it builds the component, long before eddy passes the function its env.
        api = os.environ.get("GITHUB_API", "https://api.github.com").rstrip("/")
        headers = [
            ("accept", b"application/vnd.github+json"),
            ("user-agent", b"eddy-example-repo-api"),  # GitHub refuses requests without one
        ]
        token = os.environ.get("GITHUB_TOKEN", "")
        if token:  # optional: lifts the anonymous rate limit (60 requests an hour)
            headers.append(("authorization", f"Bearer {token}".encode()))

        try:
            status, body = fetch(Method_Get(), f"{api}/repos/{owner}/{repo}", headers)
        except RequestFailed as failure:
            return send_json(response_out, 502, {"error": f"cannot reach GitHub: {failure}"})
        if status == 404:
            return send_json(response_out, 404, {"error": f"no such repository: {owner}/{repo}"})
        if status != 200:
            return send_json(response_out, 502, {"error": f"GitHub answered {status}"})
        try:
            found = json.loads(body)
            summary = {
                "repo": found["full_name"],
                "description": found.get("description"),
                "stars": found.get("stargazers_count"),
                "forks": found.get("forks_count"),
                "open_issues": found.get("open_issues_count"),
                "language": found.get("language"),
                "url": found.get("html_url"),
            }
        except (ValueError, TypeError, KeyError, AttributeError):
            # Not JSON, not an object, or an object without full_name.
            return send_json(response_out, 502, {"error": "GitHub's answer was not a repository"})
        send_json(response_out, 200, summary)


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
