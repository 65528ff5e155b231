"""ACT's training-free rivals: lm-eval runs re-scored by a label prior (contextual and batch calibration)."""
