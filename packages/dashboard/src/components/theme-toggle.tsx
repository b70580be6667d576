import { useState } from "preact/hooks";
import { setTheme, storedTheme } from "../theme.js";
import type { Theme } from "../theme.js";

const NEXT: Record<Theme, Theme> = { system: "dark", dark: "light", light: "system" };
const LABEL: Record<Theme, string> = { system: "Theme: system", dark: "Theme: dark", light: "Theme: light" };

/** Cycles system → dark → light; the button says which is in force. */
export function ThemeToggle() {
  const [theme, set] = useState<Theme>(storedTheme);
  return (
    <button
      type="button"
      id="theme-toggle"
      class="ghost"
      onClick={() => {
        const next = NEXT[theme];
        setTheme(next);
        set(next);
      }}
    >
      {LABEL[theme]}
    </button>
  );
}
