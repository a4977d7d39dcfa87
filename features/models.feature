Feature: Whole models, checked against what their publisher signed
  An operator loads a model, not a file: every weight file of a model
  directory becomes one shard, all or nothing, and the bytes that become
  resident are checked against the digests the publisher signed with
  OpenSSF model signing. A corruption found later is named by tensor.

  Scenario: A signed model directory is sealed as one shard per weight file
    Given a worker with 2 simulated GPUs of 16 MB each
    And audit logging and narration are enabled
    When I add the model directory "tiny-llama" with the signature "tiny-llama.sig" and the publisher's key
    Then the model "tiny-llama" is resident with 2 shards, verified by signature
    And shard "tiny-llama-1" is resident
    And the audit log records a "model_sealed" event with model_id "tiny-llama" and provenance "signature"
    And the offline verifier accepts the audit log with its verification key

  Scenario: A signature made with another key is refused and nothing stays resident
    Given a worker with 1 simulated GPU of 16 MB
    And audit logging and narration are enabled
    When I add the model directory "tiny-llama" with the signature "tiny-llama.other-key.sig" and the publisher's key
    Then the model add is refused as an integrity failure naming "signature does not verify"
    And no shard is resident
    And the offline verifier accepts the audit log with its verification key

  Scenario: A weight file changed after signing is caught during the copy
    Given a worker with 1 simulated GPU of 16 MB
    And audit logging and narration are enabled
    And byte 1000 of "model-00002-of-00002.safetensors" in a copy of "tiny-llama" is changed
    When I add the model directory "tiny-llama" with the signature "tiny-llama.sig" and the publisher's key
    Then the model add is refused as an integrity failure naming "model-00002-of-00002.safetensors"
    And no shard is resident
    And the audit log records a "model_rejected" event with model_id "tiny-llama" and reason "digest_mismatch"
    And the offline verifier accepts the audit log with its verification key

  Scenario: Corruption in device memory is named by the tensor it hits
    Given a worker with 1 simulated GPU of 16 MB
    When I add the model file "tiny.gguf"
    And an attacker flips a bit of byte 20000 of shard "tiny-0" in device memory
    And I verify shard "tiny-0" in full
    Then the verification fails because the device bytes changed
    And the failure names the tensor "blk.0.attn_q.weight"
