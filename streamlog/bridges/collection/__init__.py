"""An existing MongoDB collection as a source: :class:`CollectionSource` follows a
collection and appends each new document to a stream, as one item
(``streamlog bridge mongodb-collection://host/DB/COLLECTION --stream NAME``).

One job per module:

* :mod:`.url` — the address: ``mongodb-collection://`` URLs (:func:`parse_collection_url`);
* :mod:`.connection` — access: the source client, its timeouts, a refused login;
* :mod:`.documents` — documents as items (:func:`convert_document`, the conversion table);
* :mod:`.position` — where the bridge is, and how a restart finds it again in the stream;
* :mod:`.source` — :class:`CollectionSource`: following (change streams or polling by
  ``_id``), batched appends, outages (retry policy: :mod:`streamlog.bridges.retry`).
"""

from .documents import convert_document
from .position import DEFAULT_OVERLAP, RESUME_FIELD
from .source import CollectionSource
from .url import parse_collection_url

__all__ = ["DEFAULT_OVERLAP", "RESUME_FIELD", "CollectionSource", "convert_document", "parse_collection_url"]
