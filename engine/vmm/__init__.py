"""The virtual memory manager: address spaces, page tables, faults, processes."""
