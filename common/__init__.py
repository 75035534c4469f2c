"""The ground layer: what every role shares.

* :mod:`common.bus` -- the bus interface and its two transports (in-process, Kafka);
* :mod:`common.messages` -- the frame and score record contracts (``vigil.frames``,
  ``vigil.scores``);
* :mod:`common.ids` -- the one rule for scene (and camera) ids;
* :mod:`common.retry` -- capped exponential back-off and the one retry loop;
* :mod:`common.redact` -- credentials out of URLs before they reach a log line or error;
* :mod:`common.config` -- the one strict pydantic base of every config section.

Nothing here imports another vigilflow package (``docs/architecture.md``, "Layers").
"""
