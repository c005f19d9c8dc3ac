// The eddy function {{name}}: answers every request with a greeting.
//
// It is a componentize-js app exporting `wasi:http/incoming-handler`: eddy calls `handle`
// once per request. With `reuse = true` in eddy.toml the engine and this module stay warm
// between requests.
import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.10";

const encoder = new TextEncoder();

export const incomingHandler = {
  handle(request, responseOut) {
    const path = request.pathWithQuery() ?? "/";
    const body = encoder.encode(`Hello from {{name}}! You asked for ${path}\n`);

    const response = new OutgoingResponse(
      Fields.fromList([["content-type", encoder.encode("text/plain")]]),
    );
    response.setStatusCode(200);
    const outgoing = response.body();
    ResponseOutparam.set(responseOut, { tag: "ok", val: response });
    const stream = outgoing.write();
    stream.blockingWriteAndFlush(body);
    stream[Symbol.dispose]();
    OutgoingBody.finish(outgoing, undefined);
    // Release the request: a warm instance (reuse) that keeps too many handles is replaced.
    request[Symbol.dispose]();
  },
};
