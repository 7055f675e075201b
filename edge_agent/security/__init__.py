"""Signatures for what crosses the link: bureau commands in, evidence bundles out.

`canonical` defines the bytes that are signed, `keys` loads and makes Ed25519 keys,
`commands` verifies a bureau command, `nonces` remembers what was already accepted.
"""
