"""JSON-LD contexts shipped with the engine (read at import, never fetched).

* ``dsp-odrl-profile.jsonld``: the DSP 2025-1 ODRL profile context
  (``https://w3id.org/dspace/2025/1/odrl-profile.jsonld``), Apache-2.0.
* ``odrl-prefixes.jsonld``: the namespace prefixes (and the ``uid``/``type`` aliases) that the W3C ODRL
  2.2 context ``http://www.w3.org/ns/odrl.jsonld`` declares (W3C Software and Document License):
  ``odrl rdf rdfs owl skos dct xsd vcard foaf schema cc``. A document with that context may write
  ``foaf:age`` or ``vcard:hasRole`` without declaring the prefix. The context's term definitions are not
  needed: the reader reads a bare word in the ODRL namespace, as they map it (``play`` → ``odrl:play``),
  so a copy of the context made before its erratum (``neq`` → ``odrl:neg``, w3c/poe#311, fixed in April
  2025) changes nothing here. The context declares no ``dc:``; a document that writes ``dc:creator``
  declares the prefix itself.
"""
