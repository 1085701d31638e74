"""Derived signals: time accounting, throttling, starvation, MFU/MBU, diagnosis."""
