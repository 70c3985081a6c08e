"""Memory backends: where a judge's principles and episodes are persisted."""

from memalign_graph.backends.base import FORMAT_VERSION, LoadedMemory, MemoryBackend, PrinciplesCheckpoint
from memalign_graph.backends.file import FileBackend

__all__ = ["FORMAT_VERSION", "FileBackend", "LoadedMemory", "MemoryBackend", "PrinciplesCheckpoint"]
