"""Loopback emulators of the real services, serving a deterministic synthetic cover set.

The modules import one another in one direction (``album_pipeline_tests/testing/emulators/test_import_graph.py``
checks it): ``base`` (requests, replies, redaction) -> ``faults`` (the fault plan and what a fault does to a
reply) -> ``loopback`` (the HTTP server every emulator subclasses) -> each service's catalogue and ground truth
(``napster_catalog``, ``musicbrainz_catalog``, ``omacir_members`` -> ``omacir_item``, drawn by ``synthetic``)
-> each service's HTTP server (``napster``, ``musicbrainz``, ``archive``) -> ``composition``
(``running_emulators``) -> ``__main__``. This file imports none of them.
"""
