import type { QueuePlace } from "@gpupool/core";

/** A queue place's expected wait in whole seconds (`eta_s`): the expectation, else the bound; null when unknown. */
export function expectedSeconds(place: QueuePlace | null): number | null {
  if (place === null || place.etaMs === null) return null;
  const ms = place.expectedMs ?? place.etaMs;
  return Math.ceil(ms / 1000);
}

/** A queue place's bound in whole seconds (`eta_max_s`); null when unknown. */
export function boundSeconds(place: QueuePlace | null): number | null {
  return place === null || place.etaMs === null ? null : Math.ceil(place.etaMs / 1000);
}
