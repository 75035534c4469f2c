"""Alerting: calibrated scores become alerts a person can act on.

* :mod:`alerting.lifecycle` -- the per-camera state machine (k-of-n start, hysteresis end,
  minimum duration, cool-down, peak updates, deterministic ids);
* :mod:`alerting.ring`, :mod:`alerting.clip`, :mod:`alerting.region` -- the frame ring buffer
  (pre-roll), the MP4 clip and JPEG snapshot with the heat overlay, the region box;
* :mod:`alerting.store` -- Redis (with an on-disk spool while it is unreachable) or a local
  folder, the same interface;
* :mod:`alerting.events` -- the alert record and the ``vigil.alerts`` event;
* :mod:`alerting.worker` -- the alert role (frames + scores in, store + topic out);
* :mod:`alerting.cli` -- ``vigil alerts tail | list | get``;
* :mod:`alerting.config` -- the ``alerting:`` section of the config.
"""
