@server
Feature: The ChromaDB server behind a bad network
  memsys talks to a real `chroma run` server through a real Toxiproxy. However the network
  misbehaves, every call ends by its deadline with a typed error, nothing that failed lands
  later, and once the network heals the store answers with everything acknowledged.

  Scenario Outline: <fault> between memsys and the Chroma server
    Given a Chroma server store behind a proxy, with a deadline of 1 second, holding 20 notes
    When the network has <fault>
    And the operator reads, searches and stores "net-1" through it
    Then every call ended by its deadline, and each failure was a transient <error>
    And at least the search failed
    When the network heals
    Then the store holds the 20 notes, and "net-1" only if its write returned
    And a new note can be stored and read back

    Examples:
      | fault          | error                 |
      | high latency   | DeadlineExceededError |
      | reset peers    | StoreUnavailableError |
      | slow responses | DeadlineExceededError |
      | an outage      | StoreUnavailableError |

  Scenario: Reads fall back to LMDB while the Chroma server is unreachable, and writes resume after
    Given a manager over the Chroma server store and LMDB, Chroma first, with "both-1" stored in both
    When the network to the Chroma server is down
    Then a transaction storing "both-2" in both stores is committed, and incomplete on "chroma"
    And after 3 reads of "both-1" with fallback, each returning LMDB's copy, the circuit of "chroma" is open
    And a transaction storing "both-3" in both stores is aborted at once because the circuit is open
    When the network heals, the circuit's wait has passed and the manager recovers
    Then a transaction storing "both-4" in both stores commits
    And "both-1", "both-2" and "both-4" are on both stores and "both-3" on none
