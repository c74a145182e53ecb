"""memfs: the FUSE adapter and command line over the engine.

Nothing here simulates anything: it finds the file, takes the engine's lock
through the engine's own methods, calls the engine or a renderer, and turns
engine errors into errnos.
"""
