"""Image similarity search over frozen I-JEPA features: `Index.build`, `Index.add`, `Index.search`.

    from openjepa.interop import load_encoder
    from openjepa.search import Index
    enc = load_encoder("runs/demo")
    index = Index.build(enc, "photos/"); index.save("photos.index")
    hits = Index.load("photos.index").search_images(enc, "query.jpg", k=8)

Command line: `openjepa index` and `openjepa similar`. See docs in openjepa.search.index (the facade);
the rows and file format are in .store, updating in .update, the torch/FAISS search in .backends.
Image files are listed and decoded by openjepa.data.images.
"""

from .backends import BACKENDS, SearchResult
from .index import FingerprintMismatchError, Index, encoder_fingerprint
from .store import IndexFormatError
from .update import UpdateReport

__all__ = [
    "BACKENDS",
    "FingerprintMismatchError",
    "Index",
    "IndexFormatError",
    "SearchResult",
    "UpdateReport",
    "encoder_fingerprint",
]
