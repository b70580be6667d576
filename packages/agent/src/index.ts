export { startAgent } from "./agent.js";
export type { AgentOptions, RunningAgent } from "./agent.js";
export {
  AgentConfigError,
  MAX_GRACE_MS,
  MAX_SIMULATED_GPUS,
  normalizeAgentConfig,
  readAgentConfigFile,
} from "./config.js";
export type { AgentFileConfig } from "./config.js";
export { DiscoveryError, MIG_SLICE_SLOTS, WHOLE_GPU_SLOTS } from "./devices.js";
export type { NodeDevice } from "./devices.js";
export { discoverWithNvidiaSmi, simulatedDevices, simulationSeed } from "./discovery.js";
export type { DeviceSource } from "./discovery.js";
export { devicesFromNvidiaSmi, parseGpuList, parseGpuQuery } from "./nvidia-smi.js";
export { authLevel, refusalAnswer } from "./device-answers.js";
export { LocalLeases } from "./local-leases.js";
export type { LocalLease, LocalLeasesOptions } from "./local-leases.js";
export { isAlive, probe, terminate } from "./processes.js";
export { callerUid } from "./caller.js";
export { cgroupPathOf, judgePid, PID_CHECKS, readPidOwner } from "./pid-ownership.js";
export type { PidCheck, PidVerdict } from "./pid-ownership.js";
export { StateFile, StateFileError, defaultStateFile } from "./state-file.js";
