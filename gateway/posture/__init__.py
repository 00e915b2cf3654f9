"""Device posture: signed health reports from the sending host, a policy, and the verdict.

* ``report``: the report's shape, its canonical encoding and its Ed25519 signature.
* ``facts``: what the agent gathers on the sending host (each fact a small function).
* ``policy``: named policies and the pure evaluation facts + policy + now -> decision.
* ``agent``: ``ztbridge agent``, which posts signed reports every N seconds.
* ``service``: the gateway side: enrollment keys, receiving reports, the latest verdict.

Admission (``gateway.admission.check_posture``) reads the latest verdict per association.
"""
