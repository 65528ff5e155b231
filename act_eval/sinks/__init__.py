"""Sink analysis: every head's attention recorded in one pass, dataset statistics, figures and the inspection page."""
