Feature: Verifying sealed shards before inference (the execute gate)
  Before a model runs, the worker re-reads the shard from GPU memory and
  proves that it still matches its seal. Any difference stops the worker and
  names exactly which bytes changed.

  Background:
    Given a worker with 1 simulated GPU of 64 MB
    And audit logging and narration are enabled
    And shard "model-a" of 4 MB is sealed on GPU 0

  Scenario: An untouched shard verifies in full
    When I verify shard "model-a" in full
    Then the verification passes with 64 of 64 chunks checked
    And the detection probability is 100%
    And the worker is running
    And the audit log records a "seal_verified" event with shard_id "model-a" and mode "full" and chunks_checked "64"
    And a narration event with action "verify" for shard "model-a" is emitted

  Scenario: A sampled verification checks fewer chunks and says how likely it catches a change
    When I verify shard "model-a" by sampling 16 chunks
    Then the verification passes with 16 of 64 chunks checked
    And the detection probability is 25%
    And the audit log records a "seal_verified" event with shard_id "model-a" and mode "sampled"

  Scenario Outline: Corruption of device memory is detected and located (byte <offset>)
    When an attacker flips a bit of byte <offset> of shard "model-a" in device memory
    And I verify shard "model-a" in full
    Then the verification fails because the device bytes changed
    And the failure names chunk <chunk> covering bytes <first> to <last>
    And the worker is stopped
    And the stop reason mentions shard "model-a"
    And the audit log records a "seal_verification_failed" event with shard_id "model-a" and reason "digest_mismatch" and failed_chunks "<chunk>" and action_taken "worker_stopped"
    And the "verify_failed" narration says "CRITICAL"
    And the "verify_failed" narration says "'model-a'"
    And the "verify_failed" narration says "chunk <chunk> changed"

    Examples:
      | offset  | chunk | first   | last    |
      | 0       | 0     | 0       | 65535   |
      | 65535   | 0     | 0       | 65535   |
      | 65536   | 1     | 65536   | 131071  |
      | 1114129 | 17    | 1114112 | 1179647 |
      | 4194303 | 63    | 4128768 | 4194303 |

  Scenario: A clean background scrub pass records every shard it checked
    When the background scrub completes a pass
    Then the worker is running
    And the audit log records a "seal_verified" event with shard_id "model-a" and mode "scrub" and chunks_checked "64"

  Scenario: The background scrub finds corruption that no request sampled
    When an attacker flips a bit of byte 3000000 of shard "model-a" in device memory
    And the background scrub runs until it stops the worker
    Then the worker is stopped
    And the stop reason mentions shard "model-a"
    And the audit log records a "seal_verification_failed" event with shard_id "model-a" and mode "scrub" and failed_chunks "45" and action_taken "worker_stopped"
    And the "verify_failed" narration says "chunk 45 changed"

  Scenario: Corruption across a chunk boundary is reported as one range of chunks
    When an attacker flips a bit of byte 1179647 of shard "model-a" in device memory
    And an attacker flips a bit of byte 1179648 of shard "model-a" in device memory
    And I verify shard "model-a" in full
    Then the verification fails because the device bytes changed
    And the failure names chunks 17-18 covering bytes 1114112 to 1245183
    And the audit log records a "seal_verification_failed" event with shard_id "model-a" and failed_chunks "17-18"
    And the "verify_failed" narration says "chunks 17-18 changed"

  Scenario: Tampering with one of several shards stops the worker and leaves the others intact
    Given these shards are sealed:
      | shard    | size | gpu |
      | layers-0 | 2 MB | 0   |
      | layers-1 | 2 MB | 0   |
      | layers-2 | 2 MB | 0   |
    When an attacker flips a bit of byte 100000 of shard "layers-1" in device memory
    And I verify shard "layers-1" in full
    Then the verification fails because the device bytes changed
    And the failure names chunk 1 covering bytes 65536 to 131071
    And the worker is stopped
    And the device bytes of shard "layers-0" are unchanged
    And the device bytes of shard "layers-2" are unchanged
    And the device bytes of shard "model-a" are unchanged
    And verifying shard "layers-0" is refused because the worker is stopped
    And the audit log records no "seal_verified" event
    When the operator resets the worker with reason "inspected GPU 0; layers-1 will be re-sealed"
    Then shard "layers-0" verifies
    And shard "layers-2" verifies
    And shard "model-a" verifies
    And shard "layers-1" is refused because it is quarantined
    And the worker is running
