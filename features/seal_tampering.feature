Feature: Forged or altered seals are rejected
  A seal is signed with the worker's seal key over every one of its fields.
  Whoever alters any field, or signs a seal with another key, produces a seal
  that the worker's key rejects.

  Background:
    Given a worker with 1 simulated GPU of 64 MB
    And shard "model-a" of 1 MB is sealed on GPU 0
    And I take the seal of shard "model-a"

  Scenario: The untouched seal is accepted
    Then the worker's seal key accepts the seal

  Scenario Outline: Changing any field of a seal breaks it (<field>)
    When someone changes the <field> of the seal
    Then the worker's seal key rejects the seal as tampered

    Examples:
      | field           |
      | shard ID        |
      | model reference |
      | shard position  |
      | GPU index       |
      | GPU UUID        |
      | size            |
      | chunk size      |
      | flat digest     |
      | tree root       |
      | sealed-at time  |
      | key ID          |
      | worker ID       |
      | signature       |

  Scenario: A seal re-signed with an attacker's own key is rejected
    When an attacker re-signs the seal with a key derived from their own secret
    Then the worker's seal key rejects the seal as tampered

  Scenario: A seal that travels as JSON unchanged is still accepted
    When the seal travels as JSON
    Then the worker's seal key accepts the seal

  Scenario Outline: A seal edited in transit as JSON is rejected (<member>)
    When the seal travels as JSON and its <member> is edited in transit
    Then the worker's seal key rejects the seal as tampered

    Examples:
      | member    |
      | digest    |
      | tree root |
      | signature |

  Scenario: Every single-byte change to the binary seal is caught
    Then every single-byte change to the seal's binary form is rejected
