Feature: VRAM capacity
  A worker only accepts shards that fit in the free memory of the GPU, minus
  the headroom it keeps for inference, and it never overcommits a GPU, even
  when many clients seal at once.

  Scenario: A shard larger than the available VRAM is refused and nothing changes
    Given a worker with 1 simulated GPU of 16 MB
    And audit logging and narration are enabled
    And shard "resident" of 12 MB is sealed on GPU 0
    When I seal shard "too-big" of 8 MB on GPU 0
    Then the seal is refused for insufficient VRAM: 8 MB requested, 4 MB available
    And the refusal is retryable
    And shard "too-big" is not resident
    And 12 MB of VRAM is in use on GPU 0
    And the audit log records a "vram_allocation_failed" event with shard_id "too-big" and reason "insufficient_vram"
    And the "allocate_failed" narration says "VRAM allocation failed on GPU 0: requested 8.0 MiB, only 4.0 MiB available"
    And shard "resident" verifies

  Scenario: A shard that exactly fills the remaining VRAM fits
    Given a worker with 1 simulated GPU of 16 MB
    And shard "resident" of 12 MB is sealed on GPU 0
    When I seal shard "exact-fit" of 4 MB on GPU 0
    Then the seal succeeds
    And 16 MB of VRAM is in use on GPU 0
    And 0 bytes of VRAM are available on GPU 0
    When I seal shard "one-byte-more" of 1 byte on GPU 0
    Then the seal is refused for insufficient VRAM: 1 byte requested, 0 bytes available

  Scenario: Releasing a shard makes its VRAM available again
    Given a worker with 1 simulated GPU of 16 MB
    And shard "old-model" of 12 MB is sealed on GPU 0
    When I release shard "old-model"
    Then shard "old-model" is not resident
    And 16 MB of VRAM is available on GPU 0
    When I seal shard "new-model" of 16 MB on GPU 0
    Then the seal succeeds

  Scenario Outline: Only shards that fit in free VRAM minus the headroom are accepted
    Given a worker with 1 simulated GPU of 16 MB
    And the worker keeps <headroom> of VRAM free as headroom
    When I seal shard "candidate" of <size> on GPU 0
    Then the seal <outcome>

    Examples:
      | headroom | size          | outcome                          |
      | 0 bytes  | 16 MB         | succeeds                         |
      | 0 bytes  | 16 MB + 1 byte | is refused for insufficient VRAM |
      | 2 MB     | 14 MB         | succeeds                         |
      | 2 MB     | 14 MB + 1 byte | is refused for insufficient VRAM |

  Scenario: Concurrent seals never overcommit the GPU
    Given a worker with 1 simulated GPU of 16 MB
    And audit logging and narration are enabled
    When 10 clients seal distinct shards of 3 MB on GPU 0 at the same time
    Then exactly 5 seals succeed and 5 are refused for insufficient VRAM
    And 15 MB of VRAM is in use on GPU 0
    And 1 MB of VRAM is available on GPU 0
    And every shard that was sealed verifies in full
