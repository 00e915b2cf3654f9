"""Accounts: patients, doctors and staff, with password + TOTP and keys of their own.

One module per job: ``passwords`` (argon2id, length, common passwords), ``totp`` (RFC 6238
with replay refusal), ``recovery_codes``, ``keys`` (each account's Ethereum and HPKE keys,
sealed under the password and escrowed to the custodian), ``enrollment`` (one-time links),
``throttle`` (capped exponential delay), ``sessions`` (server-side sessions and tokens, the
unlocked keys in memory), ``users`` (the service the CLI and the portal call), ``links``
(patient accounts to DICOM Patient IDs; the ingest recipient directory), ``onchain`` (the
registry mirrors the accounts), ``facts`` (what ``gateway.access.decide`` is given),
``keyprovider`` (retrieve with a user's own key) and ``shares`` (grant and revoke).
"""
