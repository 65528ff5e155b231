"""The head search: held-out examples, the first-order screen, the exact engine, the keep rules, the greedy combination, the checkpointed job."""
