import { useState } from "preact/hooks";
import type { DashboardSession } from "@gpupool/sdk/browser";
import { api } from "../client.js";
import { ErrorNote } from "../components/ui.js";

/**
 * Paste a token once: the server answers with an HttpOnly session cookie, and the token is
 * dropped from the page (never stored, never in a URL).
 */
export function SignIn(props: { onSignedIn: (s: DashboardSession) => void; linkFailed: boolean }) {
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const session = await api.signIn({ token: token.trim() });
      setToken("");
      props.onSignedIn(session);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="signin">
      <h1>Sign in to gpupool</h1>
      {props.linkFailed ? (
        <p class="error" role="alert">
          That sign-in link has expired or was already used. Run <code>gpupool dashboard</code> for a new one, or paste
          your token.
        </p>
      ) : null}
      <form onSubmit={(e) => void submit(e)}>
        <label for="token">Your token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          value={token}
          onInput={(e) => setToken(e.currentTarget.value)}
          aria-describedby="token-help"
        />
        <p id="token-help" class="muted">
          A user token (<code>gpu_u_…</code>) opens your usage; the admin token opens the operator view. It is sent once
          and never kept by this page: a session cookie follows. Or run <code>gpupool dashboard</code> for a one-time
          sign-in link.
        </p>
        <button type="submit" class="primary" disabled={busy || token.trim() === ""}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
      {error ? <ErrorNote error={error} /> : null}
    </div>
  );
}
