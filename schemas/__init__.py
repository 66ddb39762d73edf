"""Wire contracts between vehicles and the centre: versioned, chunked, validated.

Modules (``docs/schemas.md`` describes the formats and the rules):

* :mod:`schemas.messages`: the messages as frozen dataclasses, ``validate``, frame keys;
* :mod:`schemas.wire`: Avro schemas, the schema registry, ``encode`` / ``decode``;
* :mod:`schemas.chunking`: ``split_payload`` and ``Reassembler`` for payloads above Kafka's limit;
* :mod:`schemas.pointcloud`: the LiDAR sweep codec;
* :mod:`schemas.errors`: the exception tree;
* :mod:`schemas.config` and :mod:`schemas.ops`: the configuration file and ``/metrics`` +
  ``/healthz`` contracts every process shares.

Nothing is re-exported here, so that importing one contract (say ``schemas.config`` in a CLI)
does not import numpy and fastavro.
"""
