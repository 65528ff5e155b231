"""Paired comparison of evaluation arms: the statistics, the report and its forest plot."""
