"""Attribution of GPUs to processes, containers, Kubernetes pods and Slurm jobs."""
