Feature: Shards spread over several GPUs
  A tensor-parallel model puts one shard on each GPU. A failure is named on
  the GPU where it happened, and the other GPUs' bytes are left alone.

  Scenario: Two GPUs: corruption on one GPU is named on that GPU
    Given a worker with 2 simulated GPUs of 32 MB each
    And audit logging and narration are enabled
    And these shards are sealed:
      | shard  | size | gpu |
      | tp-0   | 1 MB | 0   |
      | tp-1   | 1 MB | 1   |
    When an attacker flips a bit of byte 5 of shard "tp-1" in device memory
    And I verify shard "tp-1" in full
    Then the verification fails because the device bytes changed
    And the audit log records a "seal_verification_failed" event with shard_id "tp-1" and gpu_device "1"
    And the device bytes of shard "tp-0" are unchanged
    And 1 MB of VRAM is in use on GPU 0
    And 1 MB of VRAM is in use on GPU 1
    When the operator resets the worker with reason "GPU 1 drained for inspection"
    Then shard "tp-0" verifies
    And shard "tp-1" is refused because it is quarantined
