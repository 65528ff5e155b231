"""The calibration itself: the rule on tensors, the attention function that applies it, and head maps."""
