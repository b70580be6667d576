import { render } from "preact";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import "uplot/dist/uPlot.min.css";
import "./styles.css";
import { App } from "./app.js";
import { applyStoredTheme } from "./theme.js";

applyStoredTheme();
const queries = new QueryClient({
  defaultOptions: {
    queries: { staleTime: 5_000, retry: 1, refetchOnWindowFocus: true },
  },
});
const root = document.getElementById("app");
if (root !== null)
  render(
    <QueryClientProvider client={queries}>
      <App />
    </QueryClientProvider>,
    root,
  );
