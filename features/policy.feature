Feature: VRAM-only policy
  Model weights must live in dedicated GPU memory. The worker refuses shared
  or host memory, at start and on every allocation; a violation is recorded
  as critical, narrated, and stops the worker.

  Background:
    Given a worker with 1 simulated GPU of 64 MB
    And audit logging and narration are enabled

  Scenario Outline: A driver that hands out memory other than dedicated VRAM stops the worker (<violation>)
    Given the worker starts normally
    And the GPU driver starts <fault>
    When I seal shard "weights" of 1 MB on GPU 0
    Then the seal is refused for a VRAM-only policy violation "<violation>"
    And the worker is stopped
    And shard "weights" is not resident
    And no VRAM is in use on GPU 0
    And the audit log records a "policy_violation" event with shard_id "weights" and policy "vram_only" and violation "<violation>" and action_taken "worker_stopped"
    And the audit log records no "vram_sealed" event
    And a narration event with action "policy_violation" for target "weights" is emitted

    Examples:
      | fault                                                    | violation          |
      | handing out managed memory that can migrate to the host | managed_memory     |
      | mapping allocations into host memory                     | host_mapped_memory |
      | placing allocations on another GPU                       | wrong_device       |
      | silently placing allocations in host memory              | not_device_memory  |
      | reporting the GPU as integrated with host memory         | integrated_device  |

  Scenario: An integrated GPU that shares memory with the host is refused at start
    Given the GPU is an integrated GPU that shares memory with the host
    When the worker starts
    Then the worker refuses to start with a VRAM-only policy violation "integrated_device"
    And the audit log records a "policy_violation" event with violation "integrated_device" and action_taken "refused_to_start" and gpu_device "0"
    And a narration event with action "policy_violation" for target "integrated_device" is emitted

  Scenario Outline: Settings that move weights to host memory are refused at start (<setting>)
    Given the environment sets <setting>
    When the worker starts
    Then the worker refuses to start with a VRAM-only policy violation "unified_memory_env"
    And the audit log records a "policy_violation" event with violation "unified_memory_env" and action_taken "refused_to_start"

    Examples:
      | setting                            |
      | GGML_CUDA_ENABLE_UNIFIED_MEMORY=1  |
      | GGML_CUDA_ENABLE_UNIFIED_MEMORY=on |
      | TF_FORCE_UNIFIED_MEMORY=true       |

  Scenario Outline: Harmless values of those settings do not stop the worker (<setting>)
    Given the environment sets <setting>
    Then the worker starts normally
    And the audit log records no "policy_violation" event

    Examples:
      | setting                               |
      | GGML_CUDA_ENABLE_UNIFIED_MEMORY=0     |
      | GGML_CUDA_ENABLE_UNIFIED_MEMORY=false |
      | GGML_CUDA_ENABLE_UNIFIED_MEMORY=      |

  Scenario: A stopped worker refuses to execute until an operator resets it
    Given shard "model-a" of 1 MB is sealed on GPU 0
    And shard "model-b" of 1 MB is sealed on GPU 0
    When an attacker flips a bit of byte 10 of shard "model-a" in device memory
    And I verify shard "model-a" in full
    Then the verification fails because the device bytes changed
    And the worker is stopped
    And verifying shard "model-b" is refused because the worker is stopped
    And sealing shard "model-c" of 1 MB is refused because the worker is stopped
    When the operator resets the worker without giving a reason
    Then the reset is rejected as invalid input
    And the worker is stopped
    And verifying shard "model-b" is refused because the worker is stopped
    When the operator resets the worker with reason "GPU 0 memory tested; model-a will be re-sealed"
    Then the worker is running
    And shard "model-b" verifies
    And the audit log records a "worker_reset" event with reason "GPU 0 memory tested; model-a will be re-sealed" and previous_state "stopped"
    And a narration event with action "reset" for target "worker-gpu-0" is emitted
    When I release shard "model-a"
    And I seal shard "model-a" of 1 MB on GPU 0
    Then the seal succeeds
    And shard "model-a" verifies
