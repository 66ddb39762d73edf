"""Stream selection: what is worth a human label, decided frame by frame.

Pure numpy: no I/O, no clock reads, no globals; deterministic for a given seed.
"""
