import { useEffect, useState } from "preact/hooks";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import type { DashboardSession } from "@gpupool/sdk/browser";
import { api } from "./client.js";
import { ErrorNote } from "./components/ui.js";
import { ThemeToggle } from "./components/theme-toggle.js";
import { SignIn } from "./views/signin.js";
import { UserPage } from "./views/user/user-page.js";
import { OwnerPage } from "./views/owner-page.js";
import { PoolPage } from "./views/operator/pool-page.js";
import { UsersPage } from "./views/operator/users-page.js";
import { AppsPage } from "./views/operator/apps-page.js";

interface Route {
  readonly path: string;
  readonly label: string;
  readonly view: () => preact.JSX.Element;
}

const USER_ROUTES: readonly Route[] = [
  { path: "#/me", label: "My usage", view: () => <UserPage /> },
  { path: "#/apps", label: "My apps", view: () => <OwnerPage admin={false} /> },
];
const ADMIN_ROUTES: readonly Route[] = [
  { path: "#/pool", label: "Pool", view: () => <PoolPage /> },
  { path: "#/users", label: "Users", view: () => <UsersPage /> },
  { path: "#/apps", label: "Apps", view: () => <AppsPage /> },
];

/** The sign-in code of a `#signin=<code>` link, taken out of the address bar at once. */
function takeSignInCode(): string | null {
  const m = /^#signin=([^&]+)$/.exec(location.hash);
  if (m === null) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return decodeURIComponent(m[1] ?? "");
}

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return hash;
}

export function App() {
  const queries = useQueryClient();
  const [code] = useState(takeSignInCode);
  const session = useQuery({
    queryKey: ["session"],
    queryFn: async (): Promise<DashboardSession | null> =>
      code !== null ? api.signIn({ code }).catch(() => api.session()) : api.session(),
    staleTime: Infinity,
    retry: false,
  });
  const hash = useHash();
  // Another person's (or no one's) data must not outlive a sign-in or sign-out; the session's
  // own query stays, so the page follows it.
  const forgetData = () => queries.removeQueries({ predicate: (q) => q.queryKey[0] !== "session" });

  if (session.isPending)
    return (
      <main class="center" aria-busy="true">
        <p class="muted">Loading…</p>
      </main>
    );
  if (session.error) return <Shell>{<ErrorNote error={session.error} />}</Shell>;
  const s = session.data;
  if (!s)
    return (
      <Shell>
        <SignIn
          linkFailed={code !== null}
          onSignedIn={(signed) => {
            queries.setQueryData(["session"], signed);
            forgetData();
            location.hash = signed.role === "admin" ? "#/pool" : "#/me";
          }}
        />
      </Shell>
    );

  const routes = s.role === "admin" ? ADMIN_ROUTES : USER_ROUTES;
  const route = routes.find((r) => r.path === hash) ?? routes[0]!;
  const signOut = async () => {
    await api.signOut().catch(() => undefined);
    queries.setQueryData(["session"], null);
    forgetData();
  };
  return (
    <Shell
      nav={
        <nav aria-label="Views">
          <ul class="tabs">
            {routes.map((r) => (
              <li key={r.path}>
                <a href={r.path} aria-current={r === route ? "page" : undefined}>
                  {r.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
      }
      who={
        <span class="who">
          <span id="signed-in-as">{s.role === "admin" ? "Operator" : (s.user?.name ?? "")}</span>
          {s.user ? <span class="badge">{s.user.tier}</span> : null}
          <button type="button" id="sign-out" onClick={() => void signOut()}>
            Sign out
          </button>
        </span>
      }
    >
      <h1 class="visually-hidden">{route.label}</h1>
      {route.view()}
    </Shell>
  );
}

function Shell(props: {
  children: preact.ComponentChildren;
  nav?: preact.ComponentChildren;
  who?: preact.ComponentChildren;
}) {
  return (
    <>
      <a
        class="skip"
        href="#main"
        onClick={(e) => {
          // The hash names the view: move the focus without changing it.
          e.preventDefault();
          document.getElementById("main")?.focus();
        }}
      >
        Skip to content
      </a>
      <header class="top">
        <span class="brand">gpupool</span>
        {props.nav}
        <span class="spacer" />
        {props.who}
        <ThemeToggle />
      </header>
      <main id="main" tabIndex={-1}>
        {props.children}
      </main>
    </>
  );
}
