import { createBrowserClient } from "@gpupool/sdk/browser";

/** The one client of the page: same-origin, the session cookie, the CSRF token once signed in. */
export const api = createBrowserClient();
