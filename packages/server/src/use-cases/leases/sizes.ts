import { fail } from "@gpupool/core";
import type { Policy, SizePolicy } from "@gpupool/core";

/** The size a request names (the policy's default when it names none); an unknown one is a 400 naming the pool's sizes. */
export function sizeNamed(policy: Policy, name: string | undefined): SizePolicy {
  const size = policy.sizes[name ?? policy.defaultSize];
  if (!size)
    fail(
      "invalid_request",
      `Unknown size "${name ?? ""}"; this pool's sizes are ${Object.keys(policy.sizes).join(", ")}.`,
      { errors: [{ field: "size", message: "is not a configured size" }] },
    );
  return size;
}
