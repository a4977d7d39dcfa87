Feature: Observability of residency
  Every operation is recorded twice: in the tamper-evident audit log, for
  security and compliance, and as narration, for the people who run the
  worker. Both carry the same shard ID and the same correlation ID, and the
  audit log can be checked offline with its verification key.

  Scenario: Seal operation emits observability events
    Given a VramManager with audit logging and narration enabled
    When I seal a model with 1MB of data
    Then an audit event "VramSealed" should be emitted
    And a narration event with action "seal" should be emitted
    And both events should have the same shard ID

  Scenario: The audit log verifies offline after a run of operations
    Given a worker with 1 simulated GPU of 64 MB
    And audit logging and narration are enabled
    When the following operations are performed:
      | operation          | shard | size  | outcome           |
      | seal               | alpha | 2 MB  | ok                |
      | seal               | beta  | 3 MB  | ok                |
      | verify in full     | alpha |       | ok                |
      | verify by sampling | beta  |       | ok                |
      | capacity query     |       |       | ok                |
      | seal               | huge  | 1 GB  | insufficient VRAM |
      | release            | alpha |       | ok                |
      | corrupt            | beta  |       | ok                |
      | verify in full     | beta  |       | integrity failure |
      | verify in full     | beta  |       | stopped           |
      | reset              |       |       | ok                |
    And the worker shuts down
    Then the audit log holds exactly these residency events in order:
      | event                    | shard |
      | vram_allocated           | alpha |
      | vram_sealed              | alpha |
      | vram_allocated           | beta  |
      | vram_sealed              | beta  |
      | seal_verified            | alpha |
      | seal_verified            | beta  |
      | vram_allocation_failed   | huge  |
      | vram_deallocated         | alpha |
      | seal_verification_failed | beta  |
      | worker_reset             |       |
      | vram_deallocated         | beta  |
    And the offline verifier accepts the audit log with its verification key
    And the verifier checked the MAC of every record written
    And the offline verifier rejects the audit log with another log's verification key

  Scenario: An edited audit record is found by the offline verifier
    Given a worker with 1 simulated GPU of 64 MB
    And audit logging and narration are enabled
    And shard "alpha" of 1 MB is sealed on GPU 0
    And shard "beta" of 1 MB is sealed on GPU 0
    When the worker shuts down
    And someone edits the shard ID inside audit record 2
    Then the offline verifier reports record 2 as modified

  Scenario: A correlation ID sent over HTTP appears in both the narration and the audit record
    Given a worker with 1 simulated GPU of 64 MB
    And audit logging and narration are enabled
    And the worker serves its HTTP API
    When a client uploads 1 MB as shard "http-shard" with correlation ID "req-7f3a9c-0001"
    Then the response status is 201
    And the response carries correlation ID "req-7f3a9c-0001"
    And the audit record "vram_sealed" for shard "http-shard" carries correlation ID "req-7f3a9c-0001"
    And the audit record "vram_allocated" for shard "http-shard" carries correlation ID "req-7f3a9c-0001"
    And the narration event "seal" for shard "http-shard" carries correlation ID "req-7f3a9c-0001"
    And the narration event "allocate" for shard "http-shard" carries correlation ID "req-7f3a9c-0001"
    When a client verifies shard "http-shard" with correlation ID "req-7f3a9c-0002"
    Then the response status is 200
    And the response carries correlation ID "req-7f3a9c-0002"
    And the audit record "seal_verified" for shard "http-shard" carries correlation ID "req-7f3a9c-0002"
    And the narration event "verify" for shard "http-shard" carries correlation ID "req-7f3a9c-0002"

  Scenario: An unusable correlation ID is replaced, and the replacement is used everywhere
    Given a worker with 1 simulated GPU of 64 MB
    And audit logging and narration are enabled
    And the worker serves its HTTP API
    When a client uploads 1 MB as shard "http-shard" with correlation ID "not valid; DROP TABLE"
    Then the response status is 201
    And the response carries a freshly generated correlation ID instead
    And the audit record "vram_sealed" for shard "http-shard" carries that correlation ID
    And the narration event "seal" for shard "http-shard" carries that correlation ID
