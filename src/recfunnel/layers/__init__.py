"""Building blocks that two or more papers share (attention, experts, quantisation, ...)."""
