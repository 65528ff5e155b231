"""The calibration rules' names and default parameters, defined once.

The rule math, the head-map format, the attention function, the head search and the commands
all read them from here. No torch: the command line and the head-map reader import it cheaply.
"""

from __future__ import annotations

RULES = ("act", "first_token")  # what a selected head gets; the first is the default
DEFAULT_THRESHOLD = 0.1  # ACT: a key is a sink when the prompt rows give it more attention than this, on average
DEFAULT_BETA = 0.4  # ACT: what a sink's attention is multiplied by
