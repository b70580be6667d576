import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/**
 * Checkpoints the WAL from a worker thread with its own connection, so the fsync a checkpoint
 * needs never stalls the event loop that answers requests. The main connection runs with
 * wal_autocheckpoint = 0. PASSIVE checkpoints never block writers; if the WAL still grows past
 * a bound (a long-running reader), a RESTART checkpoint waits for readers and resets it.
 */
export class Checkpointer {
  private readonly worker: Worker;

  constructor(path: string, intervalMs = 200) {
    const driver = createRequire(import.meta.url).resolve("better-sqlite3");
    // An eval'd CommonJS worker: no separate file to locate from src/ (tests) or dist/ (runtime).
    const code = `
      const { workerData, parentPort } = require("node:worker_threads");
      const Database = require(workerData.driver);
      const db = new Database(workerData.path);
      db.pragma("busy_timeout = 5000");
      let stopping = false;
      const tick = () => {
        try {
          const [r] = db.pragma("wal_checkpoint(PASSIVE)");
          if (r && r.log > 16384) db.pragma("wal_checkpoint(RESTART)");
        } catch (err) {
          parentPort.postMessage({ error: String(err && err.message || err) });
        }
        if (!stopping) timer = setTimeout(tick, workerData.intervalMs);
      };
      let timer = setTimeout(tick, workerData.intervalMs);
      parentPort.on("message", (m) => {
        if (m !== "stop") return;
        stopping = true;
        clearTimeout(timer);
        try { db.pragma("wal_checkpoint(PASSIVE)"); } catch {}
        db.close();
        parentPort.postMessage("stopped");
      });
    `;
    this.worker = new Worker(code, { eval: true, workerData: { driver, path, intervalMs } });
    this.worker.unref();
  }

  /** Runs a last checkpoint and ends the thread. */
  stop(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => resolve();
      this.worker.once("message", () => void this.worker.terminate().then(done, done));
      this.worker.once("exit", done);
      this.worker.postMessage("stop");
    });
  }
}
