import type { ComponentChildren } from "preact";
import { GpupoolError } from "@gpupool/sdk/browser";

/** A titled section of a page; `id` makes it a link target and names it for assistive technology. */
export function Card(props: {
  id: string;
  title: string;
  children: ComponentChildren;
  actions?: ComponentChildren;
  wide?: boolean;
}) {
  return (
    <section class={props.wide ? "card wide" : "card"} id={props.id} aria-labelledby={`${props.id}-title`}>
      <header class="card-head">
        <h2 id={`${props.id}-title`}>{props.title}</h2>
        {props.actions}
      </header>
      {props.children}
    </section>
  );
}

/** What went wrong, in the server's words (its problem's detail), or a placeholder while loading. */
export function Loading(props: { error: unknown; what: string }) {
  if (props.error !== null && props.error !== undefined) return <ErrorNote error={props.error} />;
  return (
    <p class="muted" aria-busy="true">
      Loading {props.what}…
    </p>
  );
}

export function ErrorNote(props: { error: unknown }) {
  const e = props.error;
  const text =
    e instanceof GpupoolError ? `${e.detail || e.message} (${e.code})` : e instanceof Error ? e.message : String(e);
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

/** A figure and its label, e.g. "Left · 1,316 s". */
export function Stat(props: { label: string; value: ComponentChildren; id?: string; hint?: string }) {
  return (
    <div class="stat">
      <dt>{props.label}</dt>
      <dd id={props.id} title={props.hint}>
        {props.value}
      </dd>
    </div>
  );
}

/** A horizontal bar of parts of a whole, with a text equivalent for screen readers. */
export function Bar(props: { label: string; parts: { value: number; cls: string; name: string }[]; total: number }) {
  const total = props.total > 0 ? props.total : 1;
  return (
    <div class="bar" role="img" aria-label={props.label}>
      {props.parts.map((p) => (
        <span
          key={p.name}
          class={`seg ${p.cls}`}
          style={{ width: `${Math.max(0, Math.min(100, (p.value / total) * 100))}%` }}
        />
      ))}
    </div>
  );
}

/** Previous / next buttons of a paged table. */
export function Pager(props: { page: number; pages: number; onPage: (page: number) => void; label: string }) {
  return (
    <nav class="pager" aria-label={`${props.label} pages`}>
      <button type="button" disabled={props.page <= 0} onClick={() => props.onPage(props.page - 1)}>
        Previous
      </button>
      <span aria-live="polite">
        Page {props.page + 1} of {Math.max(1, props.pages)}
      </span>
      <button type="button" disabled={props.page >= props.pages - 1} onClick={() => props.onPage(props.page + 1)}>
        Next
      </button>
    </nav>
  );
}

/** A table that scrolls sideways on a narrow screen; focusable so a keyboard can scroll it. */
export function Scroll(props: { label: string; children: ComponentChildren }) {
  return (
    <div class="scroll" role="region" aria-label={props.label} tabIndex={0}>
      {props.children}
    </div>
  );
}
