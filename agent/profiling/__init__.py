"""Profiling Python processes with py-spy."""
