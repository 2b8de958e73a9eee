"""Building blocks that two or more papers share (attention, experts, quantisation, ...).

A block moves here when a second chapter needs it, not before.
"""
