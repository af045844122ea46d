"""Storage: the on-disk dataset format (manifest.json + one standard .npy per field), writing and opening."""

from symtrain.storage.manifest import FORMAT_VERSION, FieldSpec, Manifest, read_manifest
from symtrain.storage.reader import Dataset, Field, open_dataset
from symtrain.storage.writer import DatasetWriter, write_dataset

__all__ = ["FORMAT_VERSION", "FieldSpec", "Manifest", "read_manifest", "Dataset", "Field", "open_dataset",
           "DatasetWriter", "write_dataset"]
