// Light and dark: the system's choice (prefers-color-scheme) unless the person picked one with the
// toggle; the pick is a preference, not a secret, so it lives in localStorage.
export type Theme = "light" | "dark" | "system";
const KEY = "gpupool.theme";

export function storedTheme(): Theme {
  try {
    const t = localStorage.getItem(KEY);
    return t === "light" || t === "dark" ? t : "system";
  } catch {
    return "system";
  }
}

export function setTheme(theme: Theme): void {
  try {
    if (theme === "system") localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, theme);
  } catch {
    // Private mode: the pick lasts for this page only.
  }
  applyTheme(theme);
}

function applyTheme(theme: Theme): void {
  if (theme === "system") delete document.documentElement.dataset["theme"];
  else document.documentElement.dataset["theme"] = theme;
}

export function applyStoredTheme(): void {
  applyTheme(storedTheme());
}

/** Whether the page is dark now (for the chart's colours). */
export function isDark(): boolean {
  const t = document.documentElement.dataset["theme"];
  if (t === "dark") return true;
  if (t === "light") return false;
  return window.matchMedia("(prefers-color-scheme: dark)").matches;
}
