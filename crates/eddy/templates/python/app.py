# The eddy function {{name}}: answers every request with a greeting.
#
# It is a componentize-py `wasi:http/proxy` app: eddy calls `handle` once per request. With
# `reuse = true` in eddy.toml the interpreter and this module stay warm between requests.
# The bindings it imports are generated from wit/ when it is built; for an editor, run
# `componentize-py -d wit -w function bindings .`
import os

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        # Set with `env` in eddy.toml (or `eddy deploy --env GREETING=Hi`).
        greeting = os.environ.get("GREETING", "Hello")
        path = request.path_with_query() or "/"
        body = f"{greeting} from {{name}}! You asked for {path}\n".encode()

        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(200)
        outgoing = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        # The stream is a child of the body: close it (leave the `with`) before finishing.
        with outgoing.write() as stream:
            stream.blocking_write_and_flush(body)
        OutgoingBody.finish(outgoing, None)
