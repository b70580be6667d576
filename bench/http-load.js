// Load generator, run in its own process so it does not share the server's event loop.
// Receives { url, mode, key, connections, duration } over IPC, replies with autocannon's result.
import autocannon from "autocannon";

process.once("message", async (opts) => {
  const headers = { "content-type": "application/json", authorization: `Bearer ${opts.key ?? "none"}` };
  const requests =
    opts.mode === "lease"
      ? [
          {
            method: "POST",
            path: "/v1/leases",
            headers,
            body: JSON.stringify({ duration: 1 }),
            onResponse: (status, body, context) => {
              context.id = status === 201 ? JSON.parse(body).id : null;
              if (status !== 201) context.errors = (context.errors ?? 0) + 1;
            },
          },
          {
            method: "POST",
            headers,
            setupRequest: (req, context) => ({
              ...req,
              path: `/v1/leases/${context.id ?? "missing"}/release`,
              body: "{}",
            }),
          },
        ]
      : [{ method: "POST", path: "/noop", headers, body: JSON.stringify({ duration: 1 }) }];
  const before = process.cpuUsage();
  const result = await autocannon({ url: opts.url, connections: opts.connections, duration: opts.duration, requests });
  process.send({
    requestsPerS: result.requests.average,
    p99Ms: result.latency.p99,
    p50Ms: result.latency.p50,
    non2xx: result.non2xx,
    errors: result.errors,
    total: result.requests.total,
    clientCpuUs: (({ user, system }) => user + system)(process.cpuUsage(before)),
  });
});
