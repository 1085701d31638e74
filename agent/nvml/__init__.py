"""NVML backend and the fake NVML surface."""
