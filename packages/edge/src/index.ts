export { startEdge } from "./edge.js";
export type { EdgeLogLevel, EdgeOptions, RunningEdge } from "./edge.js";
export { AppTable, parseAppFlag } from "./apps.js";
export type { AppRoute } from "./apps.js";
export { TrustedProxies, viewerAddress } from "./viewer-ip.js";
