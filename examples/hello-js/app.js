// Hello-world eddy function in JavaScript: a componentize-js `wasi:http/proxy` app. The
// engine (StarlingMonkey) turns each incoming request into a service-worker style fetch event.
addEventListener("fetch", (event) =>
  event.respondWith(
    new Response("Hello from JavaScript on eddy!\n", {
      headers: { "content-type": "text/plain" },
    }),
  ),
);
