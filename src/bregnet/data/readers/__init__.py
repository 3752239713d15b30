"""One module per data set format; all implement :class:`FaceReader`.

Open them by name with :func:`bregnet.data.registry.open_reader`.
"""

from .affectnet import AFFECTNET_CLASSES, AffectNetReader
from .affwild2 import AffWild2Reader
from .base import FaceReader, SkippedItem
from .csvlist import CSVListReader
from .fer2013 import FER2013_CLASSES, FER2013Reader, parse_fer2013_csv
from .ferplus import FERPLUS_CLASSES, FERPlusReader
from .folder import FolderReader
from .rafdb import RAFDB_CLASSES, RAFDBReader

__all__ = [
    "AFFECTNET_CLASSES", "AffWild2Reader", "AffectNetReader", "CSVListReader", "FER2013Reader",
    "FER2013_CLASSES", "FERPLUS_CLASSES", "FERPlusReader", "FaceReader", "FolderReader",
    "RAFDBReader", "RAFDB_CLASSES", "SkippedItem", "parse_fer2013_csv",
]
