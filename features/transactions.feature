Feature: A write across stores lands on all of them or on none, on every kind of store
  An operator stores a note in two stores at once. Whatever fails, and whenever the
  process dies, the note ends up on both stores or on neither.

  Scenario Outline: A write that fails on the second store is rolled back on the first (<store>)
    Given a manager over <store> and a second store with a transaction log
    And the second store refuses to prepare any write
    When the operator stores "tx-1" in both stores
    Then the write is aborted, naming the second store
    And "tx-1" is on no store
    When the second store is healed and the operator stores "tx-1" in both stores again
    Then "tx-1" is on both stores

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: The process dies <step> the commit decision and the reopened manager settles it (<store>)
    Given a manager over <store> and a second store with a transaction log
    And "before-1" was stored in both stores
    When the process dies <step> the decision while storing "tx-2" in both stores
    And the manager is opened again on the same stores and log
    Then "tx-2" is on <where>
    And "before-1" is on both stores with the version it was acknowledged with

    Examples:
      | store    | step   | where       |
      | tinydb   | before | no store    |
      | tinydb   | after  | both stores |
      | networkx | before | no store    |
      | networkx | after  | both stores |
      | faiss    | before | no store    |
      | faiss    | after  | both stores |
      | chroma   | before | no store    |
      | chroma   | after  | both stores |
      | kuzu     | before | no store    |
      | kuzu     | after  | both stores |
      | lmdb     | before | no store    |
      | lmdb     | after  | both stores |
      | duckdb   | before | no store    |
      | duckdb   | after  | both stores |

  Scenario Outline: Two writers race to rewrite one note on <store> and the second to commit must re-run
    Given a manager over <store> and a second store with a transaction log
    And "race-1" was stored in both stores
    When two transactions read "race-1" from <store> and both rewrite it, the first commits first
    Then the first commits and the second fails with a conflict naming "race-1"
    And <store> holds the first rewrite of "race-1", with a newer version than before

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: <store> fails every write after the commit decision, and recovery completes it
    Given a manager over <store> and a second store with a transaction log, where <store> can fail
    And <store> will fail every write it is asked to apply
    When the operator stores "tx-3" in both stores
    Then the write is committed but incomplete on <store>
    And "tx-3" is on the second store only
    When <store> is healed and the manager recovers
    Then "tx-3" is on both stores

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: An error in the caller's code inside a transaction over <store> rolls both stores back
    Given a manager over <store> and a second store with a transaction log
    And "keep-1" was stored in both stores
    When a transaction rewrites "keep-1" and stores "tx-4" in both stores, then the caller's code raises
    Then the caller's error reaches the caller
    And "tx-4" is on no store
    And "keep-1" is on both stores with the version it was acknowledged with

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario: A store that refuses a write at prepare aborts the whole transaction
    Given a manager over kuzu and a second store with a transaction log
    When the operator stores a note larger than one Kuzu transaction holds in both stores
    Then the write is aborted, naming "kuzu" and saying the note is too large
    And "huge-1" is on no store

  Scenario: A writer process killed at random instants leaves every transaction all or nothing
    Given a crash campaign over LMDB, TinyDB and DuckDB
    When a writer process is killed 2 times, at random instants and at protocol steps
    Then every transaction the writer acknowledged is on all its stores
    And no transaction is on only some of its stores

  @server
  Scenario Outline: The power fails <step> and the stores come back with every acknowledged write
    Given a manager over LMDB, DuckDB and TinyDB on a disk that loses unsynced writes, compacting its log often
    And 3 transactions were acknowledged
    When the power fails <step> while a transaction stores "pl-1" in every store
    And the stores are opened again after the power is back
    Then the 3 acknowledged transactions are on every store
    And "pl-1" is on <where>

    Examples:
      | step              | where                |
      | after_prepare     | no store             |
      | after_log_sync    | every store          |
      | after_first_apply | every store          |
      | after_end         | every store          |

  @server
  Scenario Outline: The power fails <step> while <store> and a second store commit, and recovery settles it
    Given a manager over <store> and a second store on a disk that loses unsynced writes
    And "before-pl" was stored in both stores
    When the power fails <step> while a transaction stores "pl-2" in both stores
    And the two stores are opened again after the power is back
    Then "before-pl" is on both stores with the version it was acknowledged with
    And "pl-2" is on <where>

    Examples:
      | store    | step              | where       |
      | tinydb   | after_prepare     | no store    |
      | tinydb   | after_first_apply | both stores |
      | networkx | after_prepare     | no store    |
      | networkx | after_first_apply | both stores |
      | faiss    | after_prepare     | no store    |
      | faiss    | after_first_apply | both stores |
      | chroma   | after_prepare     | no store    |
      | chroma   | after_first_apply | both stores |
      | kuzu     | after_prepare     | no store    |
      | kuzu     | after_first_apply | both stores |
      | lmdb     | after_prepare     | no store    |
      | lmdb     | after_first_apply | both stores |
      | duckdb   | after_prepare     | no store    |
      | duckdb   | after_first_apply | both stores |

  Scenario Outline: A note deleted across stores is gone from both, also after a restart (<store>)
    Given a manager over <store> and a second store with a transaction log
    And "del-1" was stored in both stores
    When the operator deletes "del-1"
    Then "del-1" is on no store
    When the manager is closed and opened again on the same stores and log
    Then "del-1" is on no store

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  @server
  Scenario: A transaction whose log write meets a full disk is aborted and never committed later
    Given a manager over LMDB and TinyDB whose transaction log is on a small disk
    And "safe-1" was stored in both stores
    And the disk under the log is full
    When the operator stores a large note "full-1" in both stores
    Then the write is aborted because the disk is full
    When space is freed and "after-1" is stored in both stores
    And the process dies and the manager is opened again on the same stores and log
    Then "full-1" is on no store
    And "safe-1" is on both stores with the version it was acknowledged with
    And "after-1" is on both stores

  Scenario: The process dies after deciding the last of three large writes, and recovery completes all of them
    Given a manager over lmdb and a second store with a transaction log
    When 3 transactions each store 1000 notes in lmdb and the process dies after deciding the last
    And the manager is opened again on the same stores and log
    Then all 3000 notes are on lmdb, with one version per transaction
