Feature: Cross-store writes survive store failures
  A memory write that spans several stores lands on all of them or on none,
  whatever fails and whenever it fails.

  Background:
    Given a memory manager over LMDB, DuckDB and TinyDB with a transaction log

  Scenario: A store fails after the commit decision and recovery completes it
    Given TinyDB will refuse every write
    When a transaction stores "note-1" in every store
    Then the transaction reports it is committed but incomplete on "tinydb"
    And "note-1" is on "lmdb" and "duckdb" but not on "tinydb"
    When TinyDB is healed and the manager recovers
    Then "note-1" is on every store

  Scenario: An error inside the block rolls every store back
    When a transaction stores "note-2" in every store and then raises an error
    Then "note-2" is on no store

  Scenario: Two writers race on one item and one of them must re-run
    Given "counter" holds 0 on "lmdb"
    When two transactions read "counter" and both try to increment it
    Then one commits and the other fails with a conflict
    And "counter" holds 1 on "lmdb"

  Scenario Outline: The process dies at a step of the commit and the reopened manager repairs it
    When the process dies <step> while storing "note-3" in every store
    And the manager is opened again on the same stores and log
    Then "note-3" is on <where>

    Examples:
      | step              | where         |
      | after_prepare     | no store      |
      | after_log_sync    | every store   |
      | after_first_apply | every store   |
      | after_apply       | every store   |

  Scenario: A corrupt store file is reported and never overwritten
    Given the TinyDB file holds garbage
    When the TinyDB store is opened
    Then opening fails with a corrupt-store error naming the file
    And the file still holds the same garbage
