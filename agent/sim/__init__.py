"""The simulated GPU fleet: device models with physics, workloads, faults and ground truth."""
