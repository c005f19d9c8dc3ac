# Hello-world eddy function in Python: a componentize-py `wasi:http/proxy` app.
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
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        # The stream is a child of the body: close it (leave the `with`) before finishing.
        with body.write() as stream:
            stream.blocking_write_and_flush(b"Hello from Python on eddy!\n")
        OutgoingBody.finish(body, None)
