import { connect, createServer } from "node:net";
import type { Server, Socket } from "node:net";

/** One proxied connection, as its hooks see it. */
export interface ProxiedConnection {
  readonly id: number;
  /** Closes both sides now. */
  cut(): void;
}

/** What a proxy does with one connection's bytes; each is called before the bytes are passed on. */
export interface ProxyHooks {
  fromClient?(chunk: Buffer): void;
  /** False: these bytes are not passed on (the hook cut the connection, say). */
  fromServer?(chunk: Buffer): boolean | void;
}

/**
 * A TCP proxy between a test's server and its PostgreSQL, on loopback, that lets a test watch (or
 * cut) each connection's bytes: `hooks` is called once per connection, for that connection's.
 */
export class TcpProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private ids = 0;

  constructor(target: { host: string; port: number }, hooks: (conn: ProxiedConnection) => ProxyHooks) {
    this.server = createServer((client) => {
      const upstream = connect(target.port, target.host);
      this.sockets.add(client).add(upstream);
      const cut = (): void => {
        client.destroy();
        upstream.destroy();
      };
      const on = hooks({ id: ++this.ids, cut });
      client.on("data", (chunk: Buffer) => {
        on.fromClient?.(chunk);
        upstream.write(chunk);
      });
      upstream.on("data", (chunk: Buffer) => {
        if (on.fromServer?.(chunk) !== false) client.write(chunk);
      });
      client.on("close", cut).on("error", cut);
      upstream.on("close", cut).on("error", cut);
    });
  }

  /** Listens on a free loopback port; returns it. */
  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as { port: number }).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
