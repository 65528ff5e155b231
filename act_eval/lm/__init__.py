"""The lm-eval side: the model types, their start-up registration, the suite's tasks and data, and the runs lm-eval writes."""
