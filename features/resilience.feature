Feature: Reads and writes keep working while a store fails, on every kind of store
  The operator's stores fail and come back. Circuit breakers, retries, fallback reads, the
  read-through cache, degraded writes and repair keep memory usable and never lose or
  roll back what was acknowledged.

  Scenario Outline: A circuit breaker opens, fails fast, lets one probe through and closes (<store>)
    Given a manager over <store> whose circuit opens after 3 failures and waits 30 seconds
    And "cb-1" is stored in <store>
    And <store> is down
    When the operator reads "cb-1" from <store> 3 times
    Then every read failed because <store> is unavailable
    And the circuit of <store> is open
    When the operator reads "cb-1" from <store> again
    Then the read fails fast with an open circuit, without calling <store>
    When 30 seconds pass and <store> comes back slowly
    Then the circuit of <store> is half-open
    And while one probe read is running a second read fails fast
    And the probe read returns "cb-1" and the circuit of <store> is closed
    When <store> goes down again until its circuit opens, and 30 seconds later is back
    Then a read of "cb-1" from <store> is let through as the probe and closes the circuit

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: A read retried with backoff succeeds once <store> answers again
    Given a <store> store holding "rt-1"
    And <store> fails the next 2 reads
    When the operator reads "rt-1" with up to 4 attempts and backoff
    Then the read returns "rt-1" after 3 attempts
    And the waits between attempts grew

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: Retries give up at the deadline while <store> stays down
    Given a <store> store holding "rt-2"
    And <store> is down
    When the operator reads "rt-2" with up to 1000 attempts, backoff and a deadline of 0.3 seconds
    Then the read fails because <store> is unavailable
    And it gave up before its attempts ran out, having waited no longer than the deadline

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: A permanent error from <store> is not retried
    Given a <store> store holding "rt-3"
    And <store> refuses every read for good
    When the operator reads "rt-3" with up to 4 attempts and backoff
    Then the read fails with the permanent error after 1 attempt and no wait

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: Reads fall back to the next store while <store> is down
    Given a manager over <store> and a backup store, <store> first
    And "fb-1" is stored in both stores
    And <store> is down
    When the operator reads "fb-1" with fallback
    Then the read returns "fb-1" as the backup store holds it
    When the operator reads "nowhere-1" with fallback
    Then the read fails, naming <store> and why it failed

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: The read-through cache serves hits, reads misses and drops what a commit changed (<store>)
    Given a manager over <store> with a read-through cache
    And "ca-1" is stored in <store>
    When the operator reads "ca-1" through the cache
    Then <store> was read once
    When the operator reads "ca-1" through the cache
    Then <store> was read once
    When a new note "ca-0" and "ca-1" with the content "second draft" are written in one transaction
    And the operator reads "ca-1" through the cache
    Then the read returns the content "second draft"
    And <store> was read twice

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: Writes go to the fallback store while <store> is down and are reconciled without going back in time
    Given a manager with primary <store>, a fallback store and a reconciliation queue
    And <store> is down
    When the operator writes "dg-1" and "dg-2" in degraded mode
    Then both writes are in the fallback store and queued for <store>
    When <store> is back and "dg-2" is rewritten on <store> with the content "newer"
    And the manager reconciles
    Then <store> holds "dg-1" as the fallback store holds it
    And <store> still holds "dg-2" with the content "newer"
    And the reconciliation queue is empty, also after the manager is reopened

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |

  Scenario Outline: Drifted stores are found by diff and repaired (<store>)
    Given a manager over <store> and a backup store
    And "dr-1" and "dr-2" are stored in both stores
    And the backup store alone took "dr-3" and a newer "dr-1"
    When the operator compares the backup store with <store>
    Then the diff names "dr-3" as missing and "dr-1" as stale on <store>
    When the operator repairs the stores
    Then both stores hold the same items with the same versions
    And a second diff finds them in sync

    Examples:
      | store    |
      | tinydb   |
      | networkx |
      | faiss    |
      | chroma   |
      | kuzu     |
      | lmdb     |
      | duckdb   |
