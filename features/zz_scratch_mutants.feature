Feature: mutants (temporary)
  Scenario: m1 wrong audit event
    Given a VramManager with audit logging and narration enabled
    When I seal a model with 1MB of data
    Then an audit event "SealVerified" should be emitted
  Scenario: m2 wrong narration
    Given a VramManager with audit logging and narration enabled
    When I seal a model with 1MB of data
    Then a narration event with action "verify" should be emitted
  Scenario: m3 wrong concurrency count
    Given a worker with 1 simulated GPU of 16 MB
    When 10 clients seal distinct shards of 3 MB on GPU 0 at the same time
    Then exactly 4 seals succeed and 6 are refused for insufficient VRAM
  Scenario: m4 wrong chunk
    Given shard "model-a" of 4 MB is sealed on GPU 0
    When an attacker flips a bit of byte 65536 of shard "model-a" in device memory
    And I verify shard "model-a" in full
    Then the failure names chunk 0 covering bytes 0 to 65535
  Scenario: m5 untouched shard claimed changed
    Given shard "model-a" of 4 MB is sealed on GPU 0
    When I verify shard "model-a" in full
    Then the verification fails because the device bytes changed
  Scenario: m6 valid ID claimed invalid
    When I seal a shard with ID "good-id" and 1 MB of data
    Then the seal is rejected as invalid input
  Scenario: m7 untampered seal claimed rejected
    Given shard "model-a" of 1 MB is sealed on GPU 0
    And I take the seal of shard "model-a"
    Then the worker's seal key rejects the seal as tampered
  Scenario: m8 unedited audit log claimed modified
    Given a worker with 1 simulated GPU of 64 MB
    And audit logging and narration are enabled
    And shard "alpha" of 1 MB is sealed on GPU 0
    When the worker shuts down
    Then the offline verifier reports record 2 as modified
  Scenario: m9 wrong correlation
    Given a worker with 1 simulated GPU of 64 MB
    And audit logging and narration are enabled
    And the worker serves its HTTP API
    When a client uploads 1 MB as shard "http-shard" with correlation ID "req-1"
    Then the audit record "vram_sealed" for shard "http-shard" carries correlation ID "req-2"
  Scenario: m10 exact fit claimed refused
    Given a worker with 1 simulated GPU of 16 MB
    When I seal shard "x" of 16 MB on GPU 0
    Then the seal is refused for insufficient VRAM
