"""Image similarity search over frozen I-JEPA features: `Index.build`, `Index.add`, `Index.search`.

    from openjepa.interop import load_encoder
    from openjepa.search import Index
    enc = load_encoder("runs/demo")
    index = Index.build(enc, "photos/"); index.save("photos.index")
    hits = Index.load("photos.index").search_images(enc, "query.jpg", k=8)

Command line: `openjepa index` and `openjepa similar`. See docs in openjepa.search.index.
"""

from .index import (BACKENDS, FingerprintMismatchError, Index, IndexFormatError, SearchResult, UpdateReport,
                    encoder_fingerprint, image_extensions, read_rgb, scan_images)

__all__ = ["Index", "SearchResult", "UpdateReport", "IndexFormatError", "FingerprintMismatchError",
           "encoder_fingerprint", "image_extensions", "scan_images", "read_rgb", "BACKENDS"]
