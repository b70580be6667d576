// The copy-pasteable walk-through `gpupool demo` prints, with the real values substituted.
import type { Quota } from "@gpupool/sdk";
import { relative, secs } from "../render.js";
import type { Outcome } from "./credentials.js";

export interface TourValues {
  readonly poolUrl: string;
  readonly appUrl: string;
  readonly edgeUrl: string;
  readonly agentUrl: string;
  /** The agent's node name. */
  readonly node: string;
  readonly storage: string;
  readonly portNote: string | null;
  readonly adminToken: string;
  readonly adminSource: "env" | "saved" | "generated";
  readonly ada: { readonly name: string; readonly id: string; readonly tier: string; readonly outcome: Outcome };
  readonly bob: { readonly name: string; readonly id: string; readonly tier: string; readonly outcome: Outcome };
  readonly cleo: {
    readonly name: string;
    readonly id: string;
    readonly tier: string;
    readonly token: string;
    readonly outcome: Outcome;
  };
  readonly bobQuota: Quota | null;
  readonly app: { readonly name: string; readonly id: string; readonly key: string; readonly outcome: Outcome };
  readonly credentialsPath: string;
  readonly dir: string;
  /** Where the tour's commands keep their scratch files: the demo's directory, as a person would type it. */
  readonly scratchDir: string;
  /** One-time sign-in links to the web dashboard (null: the server could not make one). */
  readonly dashboard: {
    readonly ada: string | null;
    readonly bob: string | null;
    readonly cleo: string | null;
    readonly admin: string | null;
    readonly expiresAt: string | null;
  };
}

/** Quotes a value for sh when it needs it. */
function sh(value: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

function outcome(o: Outcome): string {
  switch (o) {
    case "created":
      return "created now";
    case "existing":
      return "already existed (reused)";
    case "renamed":
      return "created under a new name (the old one's token was not saved)";
    case "fresh":
      return "created now (an earlier run of the tour used the previous one's quota)";
  }
}

function quotaNote(q: Quota | null, now: Date): string {
  if (q === null) return "";
  const reset = q.resetsAt === null ? "window not started" : `resets ${relative(q.resetsAt, now)}`;
  return `; ${secs(q.left)} of ${secs(q.quota)} left, ${reset}`;
}

export function renderTour(v: TourValues, now: Date): string {
  const admin =
    v.adminSource === "env"
      ? "from GPUPOOL_ADMIN_TOKEN"
      : v.adminSource === "saved"
        ? "generated earlier, read from the credentials file"
        : "generated now, saved in the credentials file";
  const auth = `-H "Authorization: Bearer $APP_KEY"`;
  const json = `-H 'Content-Type: application/json' -d '{"duration": 60}'`;
  const app = sh(v.app.name);
  const lease = `${v.scratchDir}/lease.json`;
  const grant = `${v.scratchDir}/grant.json`;
  /** A field of a JSON file, as the shell substitutes it. */
  const field = (file: string, name: string) => `$(node -p 'require(${JSON.stringify(file)}).${name}')`;
  const lines = [
    "gpupool demo is running: a control plane, a simulated pool of 2 GPUs, a GPU host's agent, the edge and a demo app, in one process.",
    "",
    `  control plane  ${v.poolUrl}  (storage ${v.storage})`,
    ...(v.portNote === null ? [] : [`                 ${v.portNote}`]),
    "  GPU pool       sim-0: 2 × Simulated H200, 2 slots each (large = 1 slot, xlarge = a whole GPU)",
    `  agent          ${v.agentUrl}  (node ${v.node}: 1 simulated GPU; the spaces device API for apps on that host)`,
    `  demo app       ${v.appUrl}  (POST /generate: a 2 s job through gpu({ duration: 20 }))`,
    `  edge           ${v.edgeUrl}  (the app at ${v.edgeUrl}/apps/${v.app.name}/, sign in at ${v.edgeUrl}/login)`,
    `  admin token    ${v.adminToken}  (${admin})`,
    `  user ada       ${v.ada.id}, tier ${v.ada.tier}, name "${v.ada.name}": ${outcome(v.ada.outcome)}`,
    `  user bob       ${v.bob.id}, tier ${v.bob.tier}, name "${v.bob.name}": ${outcome(v.bob.outcome)}${quotaNote(v.bobQuota, now)}`,
    `  user cleo      ${v.cleo.id}, tier ${v.cleo.tier}, name "${v.cleo.name}": ${outcome(v.cleo.outcome)}; quota 1 min, overage on, cap $0.05`,
    `  app            ${v.app.id}, name "${v.app.name}", owned by ada: ${outcome(v.app.outcome)}`,
    `  credentials    ${v.credentialsPath} (mode 0600). The server shows tokens and keys once and`,
    "                 stores only hashes; the demo keeps them here so these commands work after a restart.",
    "",
    `The web dashboard: ${v.poolUrl}/ — open a one-time sign-in link (each works once, within 5 minutes;`,
    "`npx gpupool dashboard` prints a fresh one for $GPUPOOL_TOKEN, `--admin` for the operator):",
    `  ada (pro, owns ${v.app.name})  ${v.dashboard.ada ?? "(not available)"}`,
    `  bob (free)                ${v.dashboard.bob ?? "(not available)"}`,
    `  cleo (pro, overage on)    ${v.dashboard.cleo ?? "(not available)"}`,
    `  operator (admin)          ${v.dashboard.admin ?? "(not available)"}`,
    "",
    "Try it in another terminal, from this directory (copy-paste one block at a time):",
    "",
    "# 1. Point the CLI and curl at this pool; BOB is the free user the tour charges.",
    `export GPUPOOL_URL=${sh(v.poolUrl)} GPUPOOL_ADMIN_TOKEN=${sh(v.adminToken)} APP_KEY=${sh(v.app.key)} BOB=${sh(v.bob.name)}`,
    "",
    `# 2. Be the app calling for bob: mint the X-IP-Token an edge would inject for him (valid 10 min; run`,
    `#    the export again to refresh), get a GPU grant (HTTP 201, charged to user:${v.bob.id}), release it.`,
    "#    (Pasted again after step 3 it is an HTTP 429 and nothing to release: restart the demo for a fresh bob.)",
    `export GPUPOOL_TOKEN=$APP_KEY GPUPOOL_IP_TOKEN=$(npx gpupool ip-token --app ${app} --user "$BOB")`,
    `code=$(curl -s -o ${sh(lease)} -w '%{http_code}' -X POST "$GPUPOOL_URL/v1/leases" ${auth} \\`,
    `  -H "X-IP-Token: $GPUPOOL_IP_TOKEN" ${json}); echo "HTTP $code"; cat ${sh(lease)}; echo`,
    `if [ "$code" = 201 ]; then curl -s -X POST "$GPUPOOL_URL/v1/leases/${field(lease, "id")}/release" ${auth}; echo; fi`,
    "",
    "# 3. Exhaust bob's free quota (3.5 min a day): 60 s calls that are not released keep their reservation",
    "#    (at the deadline they expire and are charged in full), so the 4th is refused with",
    "#    429 quota_exceeded, whose detail says when to retry and what to do.",
    "for i in 1 2 3 4; do",
    `  code=$(curl -s -o ${sh(lease)} -w '%{http_code}' -X POST "$GPUPOOL_URL/v1/leases" \\`,
    `    ${auth} -H "X-IP-Token: $GPUPOOL_IP_TOKEN" ${json})`,
    '  echo "call $i: HTTP $code"',
    `  if [ "$code" != 201 ]; then cat ${sh(lease)}; echo; break; fi`,
    "done",
    "",
    "# 4. bob's quota: what is left and reserved, and when his window resets (local time).",
    "npx gpupool quota",
    "",
    "# 5. Why the next call fails: who is charged and why, billing buckets, verdict, fixes.",
    "npx gpupool diagnose",
    "",
    "# 6. The demo app forwards the X-IP-Token it receives, so the viewer (ada, pro) is charged…",
    `curl -s -X POST ${v.appUrl}/generate -H "X-IP-Token: $(npx gpupool ip-token --app ${app} --user ${sh(v.ada.name)})"`,
    `#    …and with no token at all the app itself is charged (app:${v.app.id}, anonymous tier).`,
    `curl -s -X POST ${v.appUrl}/generate`,
    "",
    "# 7. Through the edge, every request is charged to the person behind it, whatever the client sends.",
    `#    Open ${v.edgeUrl}/apps/${v.app.name}/ in a browser: charged as your IP. Sign in at ${v.edgeUrl}/login`,
    `#    with bob's token (in the credentials file), reload: charged as bob. A private window: your IP again.`,
    `curl -s ${v.edgeUrl}/apps/${app}/ | tail -1`,
    `curl -s ${v.edgeUrl}/apps/${app}/ -H "Authorization: Bearer $(node -p 'require(${JSON.stringify(v.credentialsPath)}).users.ada.token')" | tail -1`,
    `#    A forged X-IP-Token is dropped (see the X-Gpupool-Token-Dropped header) and the IP is charged.`,
    `curl -si -X POST ${v.edgeUrl}/apps/${app}/generate -H "X-IP-Token: forged" | grep -i -E '^x-gpupool|charged_to'`,
    "",
    "# 8. An app on a GPU host keeps using the `spaces` Python package unchanged, pointed at the host's agent:",
    `#    SPACES_ZERO_GPU=true SPACES_ZERO_DEVICE_API_URL=${v.agentUrl}/apps/$APP_KEY. The same calls by hand:`,
    "#    a grant on that host's GPU (JSON), then a release (204: the GPU was never given to a process).",
    `curl -s -X POST "${v.agentUrl}/apps/$APP_KEY/schedule?cgroupPath=/demo&taskId=1&enableQueue=true&tokenVersion=1&durationSeconds=10" \\`,
    `  | tee ${sh(grant)}; echo`,
    `curl -s -o /dev/null -w '%{http_code}\\n' -X POST "${v.agentUrl}/apps/$APP_KEY/release?allowToken=${field(grant, "allowToken")}"`,
    "",
    "# 9. What the app and the operator see.",
    "npx gpupool leases",
    "npx gpupool pool",
    "",
    "# 10. Credits that do engage. cleo (pro) has a 1-minute quota, $2.00 of included monthly credits, and",
    "#     overage on with a $0.05 monthly cap; the pool prices overage at $0.10 per GPU-minute. As cleo:",
    `export GPUPOOL_TOKEN=${sh(v.cleo.token)}; unset GPUPOOL_IP_TOKEN`,
    "npx gpupool me",
    "#     A 80 s call is bigger than her quota: the quota pays 60 s, credits 20 s ($0.033334 held).",
    `code=$(curl -s -o ${sh(lease)} -w '%{http_code}' -X POST "$GPUPOOL_URL/v1/leases" -H "Authorization: Bearer $GPUPOOL_TOKEN" \\`,
    `  -H 'Content-Type: application/json' -d '{"duration": 80}'); echo "HTTP $code"`,
    `if [ "$code" = 201 ]; then node -p 'JSON.stringify(require(${JSON.stringify(lease)}).billing)'; else cat ${sh(lease)}; echo; fi`,
    "#     A second call now would hold $0.05 more: past the $0.05 cap, so 402 spend_cap_reached, nothing held.",
    `curl -s -X POST "$GPUPOOL_URL/v1/leases" -H "Authorization: Bearer $GPUPOOL_TOKEN" -H 'Content-Type: application/json' -d '{"duration": 30}'; echo`,
    "#     Release the first after a few seconds: the quota pays first, so no credits are spent and the hold is released.",
    `if [ "$code" = 201 ]; then curl -s -X POST "$GPUPOOL_URL/v1/leases/${field(lease, "id")}/release" -H "Authorization: Bearer $GPUPOOL_TOKEN"; echo; fi`,
    "npx gpupool me",
    `curl -s "$GPUPOOL_URL/v1/me/wallet?limit=5" -H "Authorization: Bearer $GPUPOOL_TOKEN"; echo`,
    "#     The usage ledger: one record per ended call, which bucket paid; as CSV, or totals by day.",
    "npx gpupool usage --format csv",
    "npx gpupool usage --by day",
    "",
    `Press Ctrl-C to stop. Delete ${sh(v.dir)} to start over.`,
  ];
  return lines.join("\n");
}
