"""Host backend: CPU, memory, pressure, I/O and the processes behind each GPU."""
