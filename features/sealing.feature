Feature: Sealing model shards into GPU memory
  As the operator of an inference worker
  I want every model shard copied into dedicated GPU memory under a signed seal
  So that I can later prove that the model runs on exactly the bytes I loaded

  Background:
    Given a worker with 1 simulated GPU of 64 MB
    And audit logging and narration are enabled

  Scenario: Sealing a shard returns a signed handle that describes it
    When I seal shard "llama-7b-part-0" of model "meta-llama/Llama-2-7b@main" with 1 MB of data on GPU 0
    Then the seal succeeds
    And the handle names shard "llama-7b-part-0" and model "meta-llama/Llama-2-7b@main"
    And the handle records GPU 0 and its device UUID
    And the handle records a size of 1 MB in 16 chunks of 64 KB
    And the handle's digest is the SHA-256 of the data and its tree root covers every chunk
    And the handle is signed with the worker's seal key
    And shard "llama-7b-part-0" is resident
    And 1 MB of VRAM is in use on GPU 0
    And the audit log records a "vram_allocated" event for shard "llama-7b-part-0"
    And the audit log records a "vram_sealed" event with shard_id "llama-7b-part-0" and model_ref "meta-llama/Llama-2-7b@main"
    And the "seal" narration says "Sealed model shard 'llama-7b-part-0' in 1.0 MiB VRAM on GPU 0"

  Scenario: A shard whose size is not a whole number of chunks keeps a short last chunk
    When I seal shard "odd-size" of model "example/model@main" with 1 MB + 1 byte of data on GPU 0
    Then the seal succeeds
    And the handle records a size of 1 MB + 1 byte in 17 chunks of 64 KB
    And the handle's digest is the SHA-256 of the data and its tree root covers every chunk

  Scenario: The same shard ID cannot be sealed twice
    Given shard "weights" of 1 MB is sealed on GPU 0
    When I seal shard "weights" of 2 MB on GPU 0
    Then the seal is refused because shard "weights" already exists
    And 1 MB of VRAM is in use on GPU 0

  Scenario: The longest allowed shard ID is accepted
    When I seal a shard with ID "a" repeated 256 times and 64 KB of data
    Then the seal succeeds

  Scenario Outline: Shard IDs that could escape a path or confuse a log are rejected (<kind>)
    When I seal a shard with ID <id> and 1 MB of data
    Then the seal is rejected as invalid input
    And no shard is resident
    And no VRAM is in use on GPU 0
    And the audit log records no "vram_allocated" event
    And the rejection is narrated without revealing the ID

    Examples:
      | kind                     | id                       |
      | path traversal           | "../../etc/passwd"       |
      | absolute path            | "/var/lib/vramseal/x"    |
      | Windows path             | "..\x5c..\x5cboot.ini"   |
      | NUL byte                 | "shard\x00.bin"          |
      | newline (log injection)  | "shard\x0aFAKE LOG LINE" |
      | space                    | "shard 0"                |
      | one byte too long        | "a" repeated 257 times   |
      | non-ASCII letter         | "shard-é"                |
      | look-alike Cyrillic      | "shаrd-0"                |
      | right-to-left override   | "shard-\u202egpj.exe"    |
