import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/** How the checkpointer is run (defaults: a tick every 200 ms, a restart past 16,384 frames ≈ 64 MiB). */
export interface CheckpointerOptions {
  readonly intervalMs?: number;
  /** WAL frames past which the log is restarted (see Checkpointer). */
  readonly restartFrames?: number;
}

/**
 * Checkpoints the WAL from a worker thread with its own connection, so the fsync a checkpoint
 * needs never stalls the event loop that answers requests. The main connection runs with
 * wal_autocheckpoint = 0.
 *
 * PASSIVE checkpoints never block the writer, but under a steady stream of commits the log never
 * empties (each commit lands after the checkpoint began), so the WAL grows until it is restarted.
 * A RESTART checkpoint blocks new writers while it copies and syncs; run beside the writer, the
 * writer's BEGIN waited for it inside better-sqlite3 — the event loop frozen up to the 5 s busy
 * timeout, then the write failed "database is locked". So past `restartFrames` the worker asks
 * the store for a quiet moment: `pause` is given a function that runs the RESTART, and the store
 * calls it between commit groups, holding its writes back (asynchronously: the event loop keeps
 * answering) until the log is restarted.
 */
export class Checkpointer {
  private readonly worker: Worker;
  private restarted: (() => void) | null = null;

  constructor(path: string, pause: (restart: () => Promise<void>) => void, options: CheckpointerOptions = {}) {
    const driver = createRequire(import.meta.url).resolve("better-sqlite3");
    const intervalMs = options.intervalMs ?? 200;
    const restartFrames = options.restartFrames ?? 16_384;
    // An eval'd CommonJS worker: no separate file to locate from src/ (tests) or dist/ (runtime).
    const code = `
      const { workerData, parentPort } = require("node:worker_threads");
      const Database = require(workerData.driver);
      const db = new Database(workerData.path);
      db.pragma("busy_timeout = 5000");
      let stopping = false;
      let timer = null;
      const next = () => { if (!stopping) timer = setTimeout(tick, workerData.intervalMs); };
      const report = (err) => parentPort.postMessage({ error: String(err && err.message || err) });
      const tick = () => {
        try {
          const [r] = db.pragma("wal_checkpoint(PASSIVE)");
          // Wait for the store's word ("restart") before the next tick.
          if (r && r.log > workerData.restartFrames) return parentPort.postMessage("pause");
        } catch (err) {
          report(err);
        }
        next();
      };
      timer = setTimeout(tick, workerData.intervalMs);
      parentPort.on("message", (m) => {
        if (m === "restart") {
          try { db.pragma("wal_checkpoint(RESTART)"); } catch (err) { report(err); }
          parentPort.postMessage("restarted");
          return next();
        }
        if (m !== "stop") return;
        stopping = true;
        clearTimeout(timer);
        try { db.pragma("wal_checkpoint(PASSIVE)"); } catch {}
        db.close();
        parentPort.postMessage("stopped");
      });
    `;
    this.worker = new Worker(code, { eval: true, workerData: { driver, path, intervalMs, restartFrames } });
    this.worker.on("message", (m: unknown) => {
      if (m === "pause")
        pause(
          () =>
            new Promise<void>((resolve) => {
              this.restarted = resolve;
              this.worker.postMessage("restart");
            }),
        );
      else if (m === "restarted") {
        this.restarted?.();
        this.restarted = null;
      }
    });
    this.worker.unref();
  }

  /** Runs a last checkpoint and ends the thread. */
  stop(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        // A store still waiting for a restart must not wait for ever.
        this.restarted?.();
        resolve();
      };
      this.worker.on("message", (m: unknown) => m === "stopped" && void this.worker.terminate().then(done, done));
      this.worker.once("exit", done);
      // Wait for the last checkpoint even if nothing else keeps this process's event loop alive
      // (the worker is unref'd so that it never keeps a process alive on its own).
      this.worker.ref();
      this.worker.postMessage("stop");
    });
  }
}
