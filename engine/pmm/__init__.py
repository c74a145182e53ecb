"""Physical memory manager: frames, zones, buddy lists, per-cpu free-page stacks, allocators."""
